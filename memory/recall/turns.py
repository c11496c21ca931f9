"""Per-turn recall for one call: what earlier calls said that is relevant now, within a budget.

A call starts with a few facts in its prompt. When the caller then mentions something those
facts do not cover ("my dog Rex"), :class:`TurnRecall` searches the rest of their memory for it,
in process: a turn never waits on the network. The rules, and why:

- The search is lexical and, when an embedder is given, dense too. Embedding the turn is the
  one costly step, so it runs in a thread under ``budget_s`` and is skipped when the last one
  took longer than the budget (that estimate decays turn by turn, so one slow moment does not
  turn dense recall off for the whole call).
- A memory already in the prompt is never recalled again, and at most ``MAX_RECALLED`` stay
  recalled over a call: the prompt must stay small.
- A memory counts only when it shares a word with the turn or is very similar to it.

:class:`MemoryStats` is what memory cost the call's path, for the call report.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from loguru import logger

from memory.models import CallerMemory
from memory.recall.embeddings import Embedder
from memory.recall.ranking import Recalled, RecallIndex

#: Facts a call's recall index holds at most (the most confident and recent).
MAX_RECALL_FACTS = 1000
#: Most memories recalled into the prompt over one call.
MAX_RECALLED = 8
#: Cosine similarity from which a memory sharing no word with the turn still counts as relevant.
MIN_SIMILARITY = 0.86
#: How fast a query-embedding time over the budget is forgotten, one skipped turn at a time.
ESTIMATE_DECAY = 0.8


@dataclass(slots=True)
class MemoryStats:
    """What memory cost this call's path, for the call report.

    Attributes:
        load_s: How long the call start waited for the memory (None: there was none to load).
        load_met_budget: Whether it was ready within the load budget.
        recall_s: Time each recalling turn spent on recall.
        dense_skipped: Turns whose dense (embedding) recall was skipped to keep to the budget.
    """

    load_s: float | None = None
    load_met_budget: bool | None = None
    recall_s: list[float] = field(default_factory=list)
    dense_skipped: int = 0


class TurnRecall:
    """Recall during one call, turn by turn.

    Args:
        budget_s: Time a turn may spend on recall; over it, dense recall is skipped.
        embedder: Adds dense relevance (loaded already; None: lexical only).
        stats: Where recall times and skips are counted.
    """

    def __init__(self, *, budget_s: float, embedder: Embedder | None, stats: MemoryStats) -> None:
        self._budget_s = budget_s
        self._embedder = embedder
        self._stats = stats
        self._index: RecallIndex | None = None
        self._in_prompt: set[str] = set()
        self._recalled: list[str] = []
        self._embed_estimate_s = 0.0

    @property
    def recalled(self) -> list[str]:
        """The texts recalled so far this call, oldest first."""
        return list(self._recalled)

    @property
    def ready(self) -> bool:
        """Whether the index is built (recall before that finds nothing)."""
        return self._index is not None

    async def build(self, memory: CallerMemory, *, in_prompt: Iterable[str]) -> None:
        """Index the caller's memory; ``in_prompt`` are the ids the call started with.

        Embeds past turns, which have no stored vector: milliseconds, so off the event loop.
        Facts without a vector are not embedded here: the analysis worker does it.
        """
        self._in_prompt = set(in_prompt)
        self._index = await asyncio.to_thread(
            RecallIndex.from_memory,
            memory,
            embedder=self._embedder,
            embed_missing=False,
            max_facts=MAX_RECALL_FACTS,
        )

    async def recall(self, query: str) -> bool:
        """Search for what ``query`` (the caller's turn) brings up; True when something new."""
        index = self._index
        if index is None or not query:
            return False
        started = time.perf_counter()
        vector = await self._query_vector(index, query)
        # The search itself is a few numpy operations over one caller's memories: inline.
        found = index.search(query, k=3, exclude=self._in_prompt, query_vector=vector)
        fresh = [result for result in found if _relevant(result)]
        self._stats.recall_s.append(time.perf_counter() - started)
        if not fresh:
            return False
        self._in_prompt.update(result.id for result in fresh)
        self._recalled = (self._recalled + [result.text for result in fresh])[-MAX_RECALLED:]
        return True

    async def _query_vector(self, index: RecallIndex, query: str) -> np.ndarray | None:
        """Embed the turn for dense relevance, unless that would not fit the turn's budget."""
        if index.embedder is None:
            return None
        if self._embed_estimate_s > self._budget_s:
            self._embed_estimate_s *= ESTIMATE_DECAY
            self._stats.dense_skipped += 1
            return None
        try:
            async with asyncio.timeout(self._budget_s):
                return await asyncio.to_thread(self._timed_embedding, index, query)
        except TimeoutError:
            logger.debug("Dense recall skipped: embedding the turn is over its time budget")
            self._stats.dense_skipped += 1
            return None

    def _timed_embedding(self, index: RecallIndex, query: str) -> np.ndarray | None:
        started = time.perf_counter()
        vector = index.embed_query(query)
        self._embed_estimate_s = time.perf_counter() - started
        return vector


def _relevant(result: Recalled) -> bool:
    return result.lexical > 0 or (result.similarity or 0.0) >= MIN_SIMILARITY
