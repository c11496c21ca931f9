"""The one ranking of memories: lexical + dense relevance, conversational context, recency, trust.

Every place that picks memories uses :class:`RecallIndex`: the call-start selection
(:func:`select_for_call_start`), per-turn recall, and the LoCoMo benchmark. For a query, each
memory (a fact or a past turn) gets

    relevance = ½·minmax(BM25) + ½·minmax(cosine)         lexical and dense, equal weights
    relevance += c·max(relevance of the turns ≤ 2 away)    a reply inherits its question's
    score = confidence · ((1-γ)·relevance/max + γ·½^(age/half_life))

with c = 0.7, γ = 0.1 and a 30-day half-life by default (:class:`RankingConfig`). A turn is
embedded together with the turn before it (:func:`embedding_texts`); BM25 stems words in the
caller's language and drops function words.

Facts under ``CONFIDENCE_FLOOR`` and superseded facts are never indexed. Everything that does not
depend on the query (BM25 postings, the embedding matrix, neighbour tables) is computed once
when the index is built, so a search is a few numpy operations: well under a millisecond for
hundreds of memories. Embedding the query is the expensive part (milliseconds); it is done by
the caller (:meth:`RecallIndex.embed_query`) so that it can be timed, skipped or run off the
event loop. Without a query vector the ranking is lexical only.

The parameters and the measurements that chose them are in the README (``bench/locomo.py``).
"""

from __future__ import annotations

import functools
import heapq
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import snowballstemmer

from memory.models import CONFIDENCE_FLOOR, CallerMemory, Fact, Turn
from memory.recall.embeddings import Embedder, decode_compact

MemoryKind = Literal["fact", "turn"]

#: Words of a query that are embedded (its end): bounds the query's embedding cost.
QUERY_EMBED_WORDS = 10

_SECONDS_PER_DAY = 86_400.0
_WORD = re.compile(r"\w+")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Short function-word lists: words that match everywhere and carry no topic.
_STOPWORDS: dict[str, frozenset[str]] = {
    "english": _words(
        """a about above after again against all am an and any are as at be because been
        before being below between both but by can could did do does doing down during each
        few for from further had has have having he her here hers herself him himself his how
        i if in into is it its itself just me more most my myself no nor not now of off on
        once only or other our ours ourselves out over own same she should so some such than
        that the their theirs them themselves then there these they this those through to too
        under until up very was we were what when where which while who whom why will with
        would you your yours yourself yourselves s t d ll m o re ve y don"""
    ),
    "spanish": _words(
        """a al algo algunas algunos ante antes como con contra cual cuando de del desde donde
        durante e el ella ellas ellos en entre era eran es esa esas ese eso esos esta estaba
        estas este esto estos estoy fue fueron ha han hasta hay la las le les lo los me mi mis
        mucho muy nada ni no nos nosotros o os otra otro para pero poco por porque que quien
        se sea ser si sin sobre son su sus también te tiene tu tus un una uno unos y ya
        yo"""
    ),
    "catalan": _words(
        """a al als amb aquell aquella aquelles aquells aquest aquesta aquestes aquests com
        d de del dels des doncs el ell ella elles ells els em en ens entre era eren es és està
        estan et fins ha han havia hi i jo l la les li lo m me meu meva ja mes més molt n ne
        no nosaltres o per perquè però poc qual quan que qui s sa se seu seva si sense sobre
        són sou t també te tu té un una uns unes vaig va van vosaltres"""
    ),
}
_SNOWBALL_BY_CODE = {
    "en": "english",
    "es": "spanish",
    "ca": "catalan",
    "fr": "french",
    "de": "german",
    "it": "italian",
    "pt": "portuguese",
    "nl": "dutch",
}


@dataclass(frozen=True, slots=True)
class RankingConfig:
    """Weights of the ranking. The defaults are the ones measured in the README."""

    #: Share of BM25 in relevance when a query vector is given; the rest is dense similarity.
    lexical_weight: float = 0.5
    #: How much of its best neighbour's relevance a turn inherits (0 disables).
    context_weight: float = 0.7
    #: How many turns either side count as neighbours.
    context_window: int = 2
    #: Share of recency in the final score (the rest is relevance).
    recency_weight: float = 0.1
    #: Age at which recency counts half.
    half_life_days: float = 30.0
    #: BM25 term-frequency saturation and length normalisation (the usual values).
    bm25_k1: float = 1.2
    bm25_b: float = 0.75


DEFAULT_RANKING = RankingConfig()


@dataclass(frozen=True, slots=True)
class MemoryItem:
    """One searchable memory: a fact or a past turn, with what the ranking needs of it."""

    kind: MemoryKind
    id: str
    text: str
    #: When it was said or last confirmed (epoch seconds), for recency.
    at: float
    confidence: float = 1.0
    #: Items of one thread (the turns of one call) in list order are context for each other.
    thread: str | None = None
    #: Its embedding, when already known (e.g. stored with a fact).
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Recalled:
    """A search result."""

    kind: MemoryKind
    id: str
    text: str
    score: float
    at: float
    #: Raw BM25 score against the query (0: no word in common).
    lexical: float
    #: Cosine similarity to the query vector; None when the search had no vector.
    similarity: float | None


def turn_id(turn: Turn) -> str:
    """Stable id of a stored turn: the caller's turn number the store gave it.

    A turn stored before turns were numbered (or not stored) falls back to its call and the
    millisecond it was said.
    """
    if turn.seq is not None:
        return f"turn:{turn.seq}"
    return f"{turn.call_id or 'call'}:{round(turn.at * 1000)}"


def estimate_tokens(text: str) -> int:
    """Rough token count of a prompt line (about four characters per token, plus one)."""
    return len(text) // 4 + 1


def fact_items(facts: Sequence[Fact], *, model: str | None = None) -> list[MemoryItem]:
    """Items for the facts that may be injected (confident enough, not superseded).

    Args:
        facts: the caller's facts.
        model: the embedder name; stored embeddings of another model are ignored.
    """
    items = []
    for fact in facts:
        if not fact.injectable:
            continue
        vector = None
        if model is not None and fact.embedding is not None:
            try:
                vector = decode_compact(fact.embedding, model=model)
            except ValueError:
                vector = None
        items.append(
            MemoryItem(
                kind="fact",
                id=fact.id,
                text=fact.text,
                at=fact.last_confirmed_at,
                confidence=fact.confidence,
                vector=vector,
            )
        )
    return items


def turn_items(turns: Sequence[Turn]) -> list[MemoryItem]:
    """Items for past turns, labelled by who spoke; the turns of one call are neighbours."""
    return [
        MemoryItem(
            kind="turn",
            id=turn_id(turn),
            text=f"{'Caller' if turn.role == 'user' else 'Agent'}: {turn.text}",
            at=turn.at,
            thread=turn.call_id or "call",
        )
        for turn in turns
        if turn.text
    ]


def embedding_texts(items: Sequence[MemoryItem]) -> list[str]:
    """What to embed for each item: a turn together with the turn before it in its call.

    A reply ("Yes, last Sunday!") means little alone; with its question it can be found.
    """
    texts = []
    previous: dict[str, str] = {}
    for item in items:
        if item.thread is None:
            texts.append(item.text)
            continue
        before = previous.get(item.thread)
        texts.append(item.text if before is None else f"{before}\n{item.text}")
        previous[item.thread] = item.text
    return texts


class _Analyzer:
    """Lower-cased words, function words dropped, stemmed in the memory's language."""

    def __init__(self, language: str | None) -> None:
        code = (language or "en").split("-")[0].split("_")[0].lower()
        algorithm = _SNOWBALL_BY_CODE.get(code)
        self._stopwords = _STOPWORDS.get(algorithm or "", frozenset())
        self._stem = _stemmer(algorithm) if algorithm else _identity

    def terms(self, text: str) -> list[str]:
        return [
            self._stem(word) for word in _WORD.findall(text.lower()) if word not in self._stopwords
        ]


def _identity(word: str) -> str:
    return word


@functools.cache
def _stemmer(algorithm: str) -> Callable[[str], str]:
    # Snowball stemmers keep the word being stemmed as state: one lock per language.
    stemmer = snowballstemmer.stemmer(algorithm)
    lock = threading.Lock()

    @functools.lru_cache(maxsize=50_000)
    def stem(word: str) -> str:
        with lock:
            return stemmer.stemWord(word)

    return stem


class RecallIndex:
    """Memories of one caller, prepared for fast repeated search. Immutable once built.

    Build it once per call (off the event loop: building may embed memories that have no
    vector yet), then search it on every turn.
    """

    def __init__(
        self,
        items: Sequence[MemoryItem],
        *,
        embedder: Embedder | None = None,
        config: RankingConfig = DEFAULT_RANKING,
        language: str | None = None,
        embed_missing: bool = True,
    ) -> None:
        """Index the items.

        Args:
            items: the memories; facts under the confidence floor are left out.
            embedder: embeds the items that have no vector; without it, only the vectors
                the items carry are used and the rest count as dissimilar.
            config: ranking weights.
            language: the memories' language (BCP-47, e.g. ``es-ES``) for stemming and
                function words; English when unknown.
            embed_missing: embed the facts without a vector (False: they count as
                dissimilar, ranked on their words, and the worker embeds them later).
        """
        self._embed_missing = embed_missing
        self._items = [
            item for item in items if item.kind != "fact" or item.confidence >= CONFIDENCE_FLOOR
        ]
        self._config = config
        self._embedder = embedder
        self._analyzer = _Analyzer(language)
        count = len(self._items)
        self._position = {item.id: index for index, item in enumerate(self._items)}
        self._at = np.array([item.at for item in self._items], dtype=np.float64)
        self._confidence = np.array([item.confidence for item in self._items], dtype=np.float64)
        # Tie-break on recency then id, so equal scores always come out in one order.
        self._id_rank = np.empty(count, dtype=np.int64)
        by_id = sorted(range(count), key=lambda index: self._items[index].id)
        self._id_rank[by_id] = np.arange(count)
        self._kind_masks = {
            kind: np.array([item.kind == kind for item in self._items], dtype=bool)
            for kind in ("fact", "turn")
        }
        self._build_postings()
        self._build_neighbours()
        self._vectors, self._has_vector = self._build_vectors()

    @classmethod
    def from_memory(
        cls,
        memory: CallerMemory,
        *,
        embedder: Embedder | None = None,
        include_turns: bool = True,
        config: RankingConfig = DEFAULT_RANKING,
        embed_missing: bool = True,
        max_facts: int | None = None,
    ) -> RecallIndex:
        """Index a caller's injectable facts and (by default) recent turns.

        ``max_facts`` keeps only that many facts, the most confident and recently confirmed
        (a linear pass), so building the index is bounded whatever the caller's memory holds.
        """
        facts: Sequence[Fact] = memory.facts
        if max_facts is not None and len(facts) > max_facts:
            facts = heapq.nlargest(
                max_facts, facts, key=lambda fact: (fact.confidence, fact.last_confirmed_at)
            )
        items = fact_items(facts, model=embedder.name if embedder else None)
        if include_turns:
            items += turn_items(memory.recent_turns)
        return cls(
            items,
            embedder=embedder,
            config=config,
            language=memory.profile.language,
            embed_missing=embed_missing,
        )

    def __len__(self) -> int:
        return len(self._items)

    @property
    def embedder(self) -> Embedder | None:
        """The embedder the memory vectors come from (queries must use the same)."""
        return self._embedder

    def embed_query(self, query: str, *, max_words: int = QUERY_EMBED_WORDS) -> np.ndarray | None:
        """Embed a query for :meth:`search` (milliseconds of CPU: call it off the event loop).

        Only the last ``max_words`` words are embedded: the model's cost grows with the
        length (about half a millisecond per token here), and a long utterance tends to end
        with what it is about. The lexical part of the search still sees every word.
        """
        words = query.split()
        if self._embedder is None or not words:
            return None
        return self._embedder.embed_query([" ".join(words[-max_words:])])[0]

    def _build_postings(self) -> None:
        config = self._config
        documents = [Counter(self._analyzer.terms(item.text)) for item in self._items]
        lengths = np.array([sum(terms.values()) for terms in documents], dtype=np.float64)
        average = float(lengths.mean()) if len(lengths) and lengths.mean() > 0 else 1.0
        norm = config.bm25_k1 * (1 - config.bm25_b + config.bm25_b * lengths / average)
        postings: dict[str, tuple[list[int], list[float]]] = {}
        for index, terms in enumerate(documents):
            for term, frequency in terms.items():
                docs, weights = postings.setdefault(term, ([], []))
                docs.append(index)
                weights.append(frequency * (config.bm25_k1 + 1) / (frequency + norm[index]))
        count = len(documents)
        self._postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for term, (docs, weights) in postings.items():
            idf = math.log(1 + (count - len(docs) + 0.5) / (len(docs) + 0.5))
            self._postings[term] = (
                np.array(docs, dtype=np.int64),
                idf * np.array(weights, dtype=np.float64),
            )

    def _build_neighbours(self) -> None:
        """Table of each item's neighbours in its thread (-1 = none) and their weights."""
        config = self._config
        window = config.context_window if config.context_weight > 0 else 0
        count = len(self._items)
        table = np.full((count, 2 * window), -1, dtype=np.int64)
        threads: dict[str, list[int]] = {}
        for index, item in enumerate(self._items):
            if item.thread is not None:
                threads.setdefault(item.thread, []).append(index)
        for members in threads.values():
            for offset, index in enumerate(members):
                for distance in range(1, window + 1):
                    column = 2 * (distance - 1)
                    if offset - distance >= 0:
                        table[index, column] = members[offset - distance]
                    if offset + distance < len(members):
                        table[index, column + 1] = members[offset + distance]
        self._neighbours = table

    def _build_vectors(self) -> tuple[np.ndarray | None, np.ndarray]:
        """The embedding matrix (a zero row where unknown) and which rows are known."""
        if self._embedder is not None:
            dim = self._embedder.dim
        else:
            dims = {item.vector.shape[-1] for item in self._items if item.vector is not None}
            if len(dims) != 1:
                return None, np.zeros(len(self._items), dtype=bool)
            dim = dims.pop()
        matrix = np.zeros((len(self._items), dim), dtype=np.float32)
        has_vector = np.zeros(len(self._items), dtype=bool)
        for index, item in enumerate(self._items):
            if item.vector is not None and item.vector.shape[-1] == dim:
                matrix[index] = item.vector
                has_vector[index] = True
        # Turns have no stored vector and are few; facts are the worker's to embed.
        missing = np.flatnonzero(~has_vector & (self._kind_masks["turn"] | self._embed_missing))
        if self._embedder is not None and self._embed_missing and len(missing):
            texts = embedding_texts(self._items)
            matrix[missing] = self._embedder.embed([texts[index] for index in missing])
            has_vector[missing] = True
        return matrix, has_vector

    def _lexical(self, query: str) -> np.ndarray:
        scores = np.zeros(len(self._items), dtype=np.float64)
        for term in set(self._analyzer.terms(query)):
            posting = self._postings.get(term)
            if posting is not None:
                scores[posting[0]] += posting[1]
        return scores

    def search(
        self,
        query: str,
        *,
        k: int,
        exclude: Collection[str] = (),
        now: float | None = None,
        query_vector: np.ndarray | None = None,
        kinds: Collection[MemoryKind] = ("fact", "turn"),
    ) -> list[Recalled]:
        """The ``k`` best memories for a query, best first.

        Args:
            query: what the caller said, or the agent's purpose.
            k: how many results at most.
            exclude: ids already in the context.
            now: the time recency is measured from (default: the current time).
            query_vector: the query embedded with :meth:`embed_query`; without it the
                relevance is lexical only.
            kinds: which kinds of memory may be returned.
        """
        if k <= 0 or not self._items:
            return []
        lexical = self._lexical(query)
        similarity = None
        if query_vector is not None and self._vectors is not None:
            similarity = self._vectors @ np.asarray(query_vector, dtype=np.float32)
        scores = self._score(lexical, similarity, time.time() if now is None else now)
        eligible = np.zeros(len(self._items), dtype=bool)
        for kind in kinds:
            eligible |= self._kind_masks[kind]
        for excluded in exclude:
            position = self._position.get(excluded)
            if position is not None:
                eligible[position] = False
        candidates = np.flatnonzero(eligible)
        order = candidates[
            np.lexsort(
                (
                    self._id_rank[candidates],
                    -self._at[candidates],
                    -scores[candidates],
                )
            )
        ][:k]
        return [
            Recalled(
                kind=self._items[index].kind,
                id=self._items[index].id,
                text=self._items[index].text,
                score=float(scores[index]),
                at=self._items[index].at,
                lexical=float(lexical[index]),
                similarity=None if similarity is None else float(similarity[index]),
            )
            for index in order
        ]

    def _score(self, lexical: np.ndarray, similarity: np.ndarray | None, now: float) -> np.ndarray:
        config = self._config
        relevance = _minmax(lexical)
        if similarity is not None:
            dense = np.where(self._has_vector, similarity, np.nan)
            dense = np.nan_to_num(_minmax(dense), nan=0.0)
            relevance = config.lexical_weight * relevance + (1 - config.lexical_weight) * dense
        if self._neighbours.shape[1]:
            padded = np.append(relevance, 0.0)
            context = padded[self._neighbours].max(axis=1)
            relevance = relevance + config.context_weight * context
        peak = relevance.max()
        if peak > 0:
            relevance = relevance / peak
        age_days = np.maximum(now - self._at, 0.0) / _SECONDS_PER_DAY
        recency = np.exp2(-age_days / config.half_life_days)
        blended = (1 - config.recency_weight) * relevance + config.recency_weight * recency
        return self._confidence * blended


def _minmax(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] over the finite values; all equal gives zeros."""
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros_like(values)
    low = values[finite].min()
    span = values[finite].max() - low
    if span <= 0:
        return np.where(finite, 0.0, values)
    return (values - low) / span


#: Facts the call-start selection ranks at most (the most confident and recent first).
MAX_CALL_START_CANDIDATES = 300

#: Agents' purposes embedded so far, by (model, purpose): a purpose is fixed per agent.
_purpose_vectors: dict[tuple[str, str], np.ndarray] = {}
_PURPOSES_KEPT = 64


def _purpose_vector(embedder: Embedder, purpose: str) -> np.ndarray:
    key = (embedder.name, purpose)
    vector = _purpose_vectors.get(key)
    if vector is None:
        vector = embedder.embed_query([purpose])[0]
        if len(_purpose_vectors) < _PURPOSES_KEPT:
            _purpose_vectors[key] = vector
    return vector


def select_for_call_start(
    memory: CallerMemory,
    *,
    purpose: str,
    token_budget: int,
    k: int = 10,
    embedder: Embedder | None = None,
    now: float | None = None,
    config: RankingConfig = DEFAULT_RANKING,
) -> list[Fact]:
    """The facts to put in the system prompt at call start, best first.

    Ranks the caller's injectable facts by relevance to the agent's purpose and recency
    (the same ranking as per-turn recall), then keeps the best ``k`` whose texts fit in
    ``token_budget`` (estimated by :func:`estimate_tokens`; a fact that does not fit is
    skipped and smaller ones after it may still be taken).

    Args:
        memory: what was loaded for the caller.
        purpose: what the agent is for (its system prompt's gist); may be empty.
        token_budget: tokens the facts may take in the prompt.
        k: how many facts at most.
        embedder: when given, dense relevance is used too, from stored vectors only: nothing
            is embedded here (facts without a current vector are ranked on their words and
            the worker embeds them later), and the purpose only once warmed by
            :func:`warm_purpose`.
        now: the time recency is measured from (default: the current time).
        config: ranking weights.
    """
    if embedder is not None and not memory.facts:
        # Nothing to rank: the start-up warm-up (an empty memory) embeds the purpose here.
        warm_purpose(embedder, purpose)
    if k <= 0 or token_budget <= 0:
        return []
    index = RecallIndex.from_memory(
        memory,
        embedder=embedder,
        include_turns=False,
        config=config,
        embed_missing=False,
        max_facts=MAX_CALL_START_CANDIDATES,
    )
    purpose_vector = (
        _purpose_vectors.get((embedder.name, purpose))
        if embedder is not None and purpose.strip()
        else None
    )
    by_id = {fact.id: fact for fact in memory.facts}
    chosen: list[Fact] = []
    remaining = token_budget
    for result in index.search(purpose, k=4 * k, now=now, query_vector=purpose_vector):
        cost = estimate_tokens(result.text)
        if cost <= remaining:
            chosen.append(by_id[result.id])
            remaining -= cost
            if len(chosen) == k:
                break
    return chosen


def warm_purpose(embedder: Embedder, purpose: str) -> None:
    """Embed an agent's purpose once per process (at start-up, never in a call start)."""
    if purpose.strip():
        _purpose_vector(embedder, purpose)


def call_start_facts(
    memory: CallerMemory,
    *,
    purpose: str,
    token_budget: int,
    max_facts: int,
    embedder: Embedder | None = None,
) -> list[Fact]:
    """The facts a call starts with: two thirds of the block's budget, steered by the purpose.

    The one selection of a call start: a call-start digest stores what it chose (the memory's
    ``selected``, returned as it is; the digest was built for the same purpose and budgets).

    Args:
        memory: The caller's loaded memory.
        purpose: What the agent is for (``RAPPORT_AGENT_PURPOSE``).
        token_budget: Estimated tokens the whole memory block may take.
        max_facts: Most facts chosen.
        embedder: Adds dense relevance to the choice (None: lexical only).
    """
    if memory.selected is not None:
        return list(memory.selected)
    return select_for_call_start(
        memory, purpose=purpose, token_budget=token_budget * 2 // 3, k=max_facts, embedder=embedder
    )
