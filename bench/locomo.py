"""LoCoMo retrieval recall of Rapport's ranking, against BM25, dense and recency baselines.

Usage (from the repository root)::

    python -m bench.locomo [PATH] [--json] [--embedder e5|hashing] [--cache FILE]

PATH defaults to ``../shared/data/locomo/locomo_dev.json`` (never committed). Recall is measured
as ``shared/data/README.md`` defines it: one index per conversation (one caller's memory), the
question as the query, gold = the normalised evidence ids; ``any@k`` = some gold id in the top
k, ``frac@k`` = share of gold ids in the top k; categories 1-4, overall and per category, at
k = 5, 10, 50. Two levels:

- ``turn``: every turn is one memory (id = its dia_id, time = its session's date), labelled
  with its speaker; an image's caption is part of the turn.
- ``fact``: the ``observation`` facts; a retrieved fact counts through its source dia_ids.

Methods, all through ``memory.recall.ranking.RecallIndex`` with different weights:
``rapport`` (the default ranking), ``rapport_lexical`` (the same without the query embedding,
as when per-turn recall has no time to embed), ``bm25`` (lexical only), ``dense`` (cosine only)
and ``recency`` (newest first). Latency per query is measured around query embedding + search
(``total``; each question is embedded once, its vector shared by the methods that use one) and
around the search alone; memories are embedded at index build, as the worker does when it
writes them. ``--cache`` keeps those memory vectors between runs (embedding every turn takes a
few minutes); queries are always embedded live.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from bench.report import progress
from memory.recall.embeddings import E5Embedder, Embedder, HashingEmbedder
from memory.recall.ranking import (
    DEFAULT_RANKING,
    MemoryItem,
    RankingConfig,
    RecallIndex,
    embedding_texts,
)

DEFAULT_PATH = Path("../shared/data/locomo/locomo_dev.json")
KS = (5, 10, 50)
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
METHODS: dict[str, RankingConfig] = {
    "rapport": DEFAULT_RANKING,
    # The same ranking when the query embedding is skipped (over the per-turn budget).
    "rapport_lexical": DEFAULT_RANKING,
    "bm25": RankingConfig(lexical_weight=1.0, context_weight=0.0, recency_weight=0.0),
    "dense": RankingConfig(lexical_weight=0.0, context_weight=0.0, recency_weight=0.0),
    "recency": RankingConfig(context_weight=0.0, recency_weight=1.0),
}
#: Methods that use the query embedding.
DENSE_METHODS = {"rapport", "dense"}
_EVIDENCE_SPLIT = re.compile(r"[;,\s]+")


@dataclass(slots=True)
class Question:
    text: str
    gold: set[str]
    category: int


@dataclass(slots=True)
class Conversation:
    sample_id: str
    turns: list[MemoryItem]
    facts: list[MemoryItem]
    #: Fact id -> the dia_ids it came from.
    fact_sources: dict[str, set[str]]
    questions: list[Question]
    #: Recency is measured from the conversation's last session.
    now: float


@dataclass(slots=True)
class Ranked:
    """Retrieved dia_ids per question (top max(KS) memories) and timings."""

    hits: list[list[set[str]]] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    search_ms: list[float] = field(default_factory=list)


def session_time(text: str) -> float:
    """Epoch seconds of a LoCoMo session date ("1:56 pm on 8 May, 2023")."""
    return datetime.strptime(text, "%I:%M %p on %d %B, %Y").timestamp()


def normalise_id(raw: str) -> str:
    return raw.strip().replace("D:", "D")


def load(path: Path) -> list[Conversation]:
    """Read the LoCoMo JSON into memories and scored questions."""
    conversations = []
    for sample in json.loads(path.read_text()):
        dialogue = sample["conversation"]
        turns: list[MemoryItem] = []
        session_times: dict[int, float] = {}
        number = 1
        while f"session_{number}" in dialogue:
            start = session_time(dialogue[f"session_{number}_date_time"])
            session_times[number] = start
            for offset, turn in enumerate(dialogue[f"session_{number}"]):
                text = f"{turn['speaker']}: {turn['text']}"
                if turn.get("blip_caption"):
                    text += f" [shares {turn['blip_caption']}]"
                turns.append(
                    MemoryItem(
                        kind="turn",
                        id=turn["dia_id"],
                        text=text,
                        # Turns of a session follow each other: a second apart keeps the order.
                        at=start + offset,
                        thread=f"session_{number}",
                    )
                )
            number += 1
        known = {turn.id for turn in turns}
        facts: list[MemoryItem] = []
        fact_sources: dict[str, set[str]] = {}
        for key, by_speaker in sample["observation"].items():
            number = int(re.search(r"\d+", key).group())
            for observations in by_speaker.values():
                for text, source in observations:
                    fact_id = f"F{len(facts)}"
                    sources = [source] if isinstance(source, str) else source
                    fact_sources[fact_id] = {normalise_id(s) for s in sources}
                    facts.append(
                        MemoryItem(kind="fact", id=fact_id, text=text, at=session_times[number])
                    )
        questions = []
        for qa in sample["qa"]:
            if qa["category"] not in CATEGORIES:
                continue
            gold = {
                normalise_id(part)
                for evidence in qa["evidence"]
                for part in _EVIDENCE_SPLIT.split(evidence)
                if part
            } & known
            if gold:
                questions.append(Question(qa["question"], gold, qa["category"]))
        conversations.append(
            Conversation(
                sample_id=sample["sample_id"],
                turns=turns,
                facts=facts,
                fact_sources=fact_sources,
                questions=questions,
                now=max(turn.at for turn in turns),
            )
        )
    return conversations


class VectorCache:
    """Optional on-disk cache of memory vectors (re-running the benchmark skips embedding)."""

    def __init__(self, path: Path | None, embedder: Embedder) -> None:
        self._path = path
        self._embedder = embedder
        self._vectors: dict[str, np.ndarray] = {}
        if path is not None and path.exists():
            with np.load(path) as stored:
                self._vectors = {key: stored[key] for key in stored.files}

    def _key(self, text: str) -> str:
        return hashlib.sha1(f"{self._embedder.name}\0{text}".encode()).hexdigest()

    def embed(self, texts: list[str]) -> np.ndarray:
        keys = [self._key(text) for text in texts]
        missing = [i for i, key in enumerate(keys) if key not in self._vectors]
        if missing:
            vectors = self._embedder.embed([texts[i] for i in missing])
            for i, vector in zip(missing, vectors, strict=True):
                self._vectors[keys[i]] = vector
        dim = self._embedder.dim
        return np.array([self._vectors[key] for key in keys], dtype=np.float32).reshape(-1, dim)

    def save(self) -> None:
        if self._path is not None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(self._path, **self._vectors)


def with_vectors(items: list[MemoryItem], cache: VectorCache) -> list[MemoryItem]:
    vectors = cache.embed(embedding_texts(items))
    return [replace(item, vector=vector) for item, vector in zip(items, vectors, strict=True)]


def rank(
    conversations: list[Conversation],
    level: str,
    embedder: Embedder,
    cache: VectorCache,
    queries: dict[tuple[str, int], tuple[np.ndarray | None, float]],
) -> dict[str, Ranked]:
    """Run every question through every method at one level.

    Each question is embedded once (timed) and its vector shared by the methods and levels
    that use one, so their latency is that embedding time plus their own search time.
    """
    ranked = {method: Ranked() for method in METHODS}
    depth = max(KS)
    for conversation in progress(conversations, f"ranking {level}s"):
        items = conversation.turns if level == "turn" else conversation.facts
        items = with_vectors(items, cache)
        indexes = {
            method: RecallIndex(items, embedder=embedder, config=config, language="en")
            for method, config in METHODS.items()
        }
        for position, question in enumerate(conversation.questions):
            key = (conversation.sample_id, position)
            if key not in queries:
                started = time.perf_counter()
                vector = indexes["rapport"].embed_query(question.text)
                queries[key] = (vector, (time.perf_counter() - started) * 1000)
            vector, embed_ms = queries[key]
            for method, index in indexes.items():
                dense = method in DENSE_METHODS
                started = time.perf_counter()
                results = index.search(
                    question.text,
                    k=depth,
                    now=conversation.now,
                    query_vector=vector if dense else None,
                )
                search_ms = (time.perf_counter() - started) * 1000
                ranked[method].search_ms.append(search_ms)
                ranked[method].total_ms.append(search_ms + (embed_ms if dense else 0.0))
                ranked[method].hits.append(
                    [
                        conversation.fact_sources[result.id] if level == "fact" else {result.id}
                        for result in results
                    ]
                )
    return ranked


def score(conversations: list[Conversation], ranked: Ranked) -> dict[str, object]:
    """any@k / frac@k overall and per category, with latency percentiles."""
    questions = [question for conversation in conversations for question in conversation.questions]
    rows: dict[str, list[dict[str, float]]] = {"all": []}
    for question, hits in zip(questions, ranked.hits, strict=True):
        row = {}
        for k in KS:
            found = set().union(*hits[:k]) & question.gold
            row[f"any@{k}"] = float(bool(found))
            row[f"frac@{k}"] = len(found) / len(question.gold)
        rows["all"].append(row)
        rows.setdefault(CATEGORIES[question.category], []).append(row)
    result: dict[str, object] = {}
    for group in ["all", *CATEGORIES.values()]:
        members = rows.get(group, [])
        metrics: dict[str, float] = {"n": len(members)}
        for metric in (f"{kind}@{k}" for kind in ("any", "frac") for k in KS):
            metrics[metric] = (
                round(statistics.fmean(r[metric] for r in members), 4) if members else 0.0
            )
        result[group] = metrics
    result["latency_ms"] = {
        "p50": round(float(np.percentile(ranked.total_ms, 50)), 3),
        "p95": round(float(np.percentile(ranked.total_ms, 95)), 3),
        "search_p50": round(float(np.percentile(ranked.search_ms, 50)), 3),
        "search_p95": round(float(np.percentile(ranked.search_ms, 95)), 3),
    }
    return result


def run(path: Path, embedder: Embedder, cache_path: Path | None) -> dict[str, object]:
    conversations = load(path)
    cache = VectorCache(cache_path, embedder)
    embedder.embed_query(["warm up"])  # the model loads once per process, not in a query
    report: dict[str, object] = {method: {} for method in METHODS}
    queries: dict[tuple[str, int], tuple[np.ndarray | None, float]] = {}
    started = time.perf_counter()
    for level in ("turn", "fact"):
        for method, ranked in rank(conversations, level, embedder, cache, queries).items():
            report[method][level] = score(conversations, ranked)
    cache.save()
    report["meta"] = {
        "data": path.name,
        # Latency depends on what else the machine runs: say how busy it was.
        "load_average": round(os.getloadavg()[0], 2),
        "conversations": len(conversations),
        "questions": sum(len(c.questions) for c in conversations),
        "embedder": embedder.name,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return report


def print_tables(report: dict[str, object]) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output has no terminal width: give the tables room instead of truncating.
    console = Console() if sys.stdout.isatty() else Console(width=120)
    meta = report["meta"]
    for level in ("turn", "fact"):
        table = Table(
            title=f"LoCoMo {meta['data']}: {level} level, categories 1-4 "
            f"({meta['questions']} questions, {meta['embedder']})"
        )
        table.add_column("method", no_wrap=True)
        for k in KS:
            table.add_column(f"any@{k}", justify="right")
        for k in KS:
            table.add_column(f"frac@{k}", justify="right")
        table.add_column("p50 ms", justify="right")
        table.add_column("p95 ms", justify="right")
        for method in METHODS:
            figures = report[method][level]
            overall, latency = figures["all"], figures["latency_ms"]
            table.add_row(
                method,
                *(f"{overall[f'any@{k}']:.3f}" for k in KS),
                *(f"{overall[f'frac@{k}']:.3f}" for k in KS),
                f"{latency['p50']:.2f}",
                f"{latency['p95']:.2f}",
            )
        console.print(table)
        by_category = Table(title=f"{level} level by category: any@10 / frac@10")
        by_category.add_column("method", no_wrap=True)
        for name in CATEGORIES.values():
            by_category.add_column(f"{name} (n={report['rapport'][level][name]['n']})")
        for method in METHODS:
            figures = report[method][level]
            by_category.add_row(
                method,
                *(
                    f"{figures[name]['any@10']:.3f} / {figures[name]['frac@10']:.3f}"
                    for name in CATEGORIES.values()
                ),
            )
        console.print(by_category)
    console.print(
        "latency = query embedding + search; search alone (rapport, turn level): "
        f"p50 {report['rapport']['turn']['latency_ms']['search_p50']:.3f} ms, "
        f"p95 {report['rapport']['turn']['latency_ms']['search_p95']:.3f} ms; "
        f"{meta['seconds']} s in all"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--embedder",
        choices=("e5", "hashing"),
        default="e5",
        help="e5: the default model; hashing: the test fallback (fast, lexical)",
    )
    parser.add_argument("--cache", type=Path, help="file to keep memory vectors between runs")
    args = parser.parse_args(argv)
    if not args.path.exists():
        print(f"no LoCoMo data at {args.path}", file=sys.stderr)
        return 2
    embedder: Embedder = E5Embedder() if args.embedder == "e5" else HashingEmbedder()
    report = run(args.path, embedder, args.cache)
    if args.json:
        print(json.dumps(report))
    else:
        print_tables(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
