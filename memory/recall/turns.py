"""Per-turn recall for one call: what earlier calls said that is relevant now, within a budget.

A call starts with a few facts in its prompt. When the caller then mentions something those
facts do not cover ("my dog Rex"), :class:`TurnRecall` searches the rest of their memory for it,
in process: a turn never waits on the network. The rules, and why:

- The search is lexical and, when an embedder is given, dense too. Embedding the turn is the
  one costly step (10-20 ms on a small CPU, about the whole budget), so it is done while the
  caller is still speaking: :meth:`TurnRecall.hear` is given each transcript, interim ones
  included, and embeds the latest words in a thread. At most one embedding is in flight; words
  heard meanwhile wait, only the latest of them, and are embedded next. When the turn is over
  the vector of its words is usually ready. If it is not, the turn waits for it only when it can
  arrive within ``budget_s`` (from the last embedding's time). If it cannot, and the final
  transcript begins with words already embedded and adds a word or two to them (the STT had not
  shown the last words in an interim yet, or changed the last one), the turn is searched with
  the vector of the most words heard so far that it begins with; otherwise it is searched
  lexically. Words the caller did not end up saying (a stale interim) are never used.
- A memory already in the prompt is never recalled again, and at most ``MAX_RECALLED`` stay
  recalled over a call: the prompt must stay small.
- A memory counts only when it shares a word with the turn or is very similar to it.

:class:`MemoryStats` is what memory cost the call's path, for the call report.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from loguru import logger

from memory.models import CallerMemory
from memory.recall.embeddings import Embedder
from memory.recall.ranking import QUERY_EMBED_WORDS, Recalled, RecallIndex

#: Facts a call's recall index holds at most (the most confident and recent).
MAX_RECALL_FACTS = 1000
#: Most memories recalled into the prompt over one call.
MAX_RECALLED = 8
#: Cosine similarity from which a memory sharing no word with the turn still counts as relevant.
MIN_SIMILARITY = 0.86
#: How fast a query-embedding time over the budget is forgotten, one skipped turn at a time.
ESTIMATE_DECAY = 0.8
#: Words a final transcript may add to embedded ones for their vector to stand in for its own.
MAX_UNHEARD_WORDS = 2
#: Vectors of a turn's words kept to stand in for its own: the words before a revised last word
#: were embedded one or two interim transcripts before the last one.
HEARD_SO_FAR_KEPT = 4

_WORD = re.compile(r"\w+")


@dataclass(slots=True)
class MemoryStats:
    """What memory cost this call's path, for the call report.

    Attributes:
        load_s: How long the call start waited for the memory (None: there was none to load).
        load_met_budget: Whether it was ready within the load budget.
        recall_s: Time each recalling turn spent on recall.
        dense_skipped: Turns whose dense (embedding) recall was skipped to keep to the budget.
        dense_used: Turns searched with their words' vector (the dense half in time).
        dense_heard_so_far: Turns searched with the vector of their words but the last one or
            two, added or changed by the final transcript (whose own did not arrive in time).
    """

    load_s: float | None = None
    load_met_budget: bool | None = None
    recall_s: list[float] = field(default_factory=list)
    dense_skipped: int = 0
    dense_used: int = 0
    dense_heard_so_far: int = 0


def _normalised(text: str) -> tuple[str, ...]:
    return tuple(word.lower() for word in _WORD.findall(text))


def embedded_words(text: str) -> tuple[str, ...]:
    """The words of ``text`` a query embedding is made of, as compared between transcripts.

    The last :data:`~memory.recall.ranking.QUERY_EMBED_WORDS` words (what
    :meth:`~memory.recall.ranking.RecallIndex.embed_query` embeds), lower case, without punctuation:
    an interim transcript and the final one differ in little else.
    """
    return _normalised(" ".join(text.split()[-QUERY_EMBED_WORDS:]))


@dataclass(slots=True)
class _Embedding:
    """The one query embedding in flight: of ``said``, whose embedded words are ``words``."""

    words: tuple[str, ...]
    said: tuple[str, ...]
    task: asyncio.Task[np.ndarray | None]
    started: float


@dataclass(slots=True)
class _Vector:
    """The last embedding that arrived."""

    words: tuple[str, ...]
    said: tuple[str, ...]
    vector: np.ndarray | None


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
        self._said: list[str] = []  # the turn's final transcripts so far
        self._running: _Embedding | None = None
        self._next: str | None = None  # the latest words heard while an embedding ran
        self._ready: _Vector | None = None
        self._heard_so_far: deque[_Vector] = deque(maxlen=HEARD_SO_FAR_KEPT)
        self._closed = False

    @property
    def recalled(self) -> list[str]:
        """The texts recalled so far this call, oldest first."""
        return list(self._recalled)

    @property
    def ready(self) -> bool:
        """Whether the index is built (recall before that finds nothing)."""
        return self._index is not None

    @property
    def embedding(self) -> bool:
        """Whether an embedding of the caller's words is in flight."""
        return self._running is not None

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

    def hear(self, text: str, *, final: bool) -> None:
        """What the caller is saying, as transcribed (interim or final): embed it ahead.

        Call on the event loop; returns at once. The turn's words so far are its final
        transcripts and the latest interim one.
        """
        if not text.strip():
            return
        words = " ".join([*self._said, text])
        if final:
            self._said.append(text)
        if self._index is not None and self._index.embedder is not None and not self._closed:
            self._embed_ahead(words)

    async def recall(self, query: str) -> bool:
        """Search for what ``query`` (the caller's turn) brings up; True when something new."""
        self._said = []  # the turn is over: what is heard next belongs to the next one
        index = self._index
        if index is None or not query:
            return False
        started = time.perf_counter()
        vector = await self._query_vector(index, query)
        self._heard_so_far.clear()
        # The search itself is a few numpy operations over one caller's memories: inline.
        found = index.search(query, k=3, exclude=self._in_prompt, query_vector=vector)
        fresh = [result for result in found if _relevant(result)]
        self._stats.recall_s.append(time.perf_counter() - started)
        if not fresh:
            return False
        self._in_prompt.update(result.id for result in fresh)
        self._recalled = (self._recalled + [result.text for result in fresh])[-MAX_RECALLED:]
        return True

    def close(self) -> None:
        """Stop embedding (the call is over); an embedding under way is left to its thread."""
        self._closed = True
        self._next = None
        if self._running is not None:
            self._running.task.cancel()

    async def _query_vector(self, index: RecallIndex, query: str) -> np.ndarray | None:
        """The turn's vector: embedded ahead, or now if it fits the budget; else None."""
        if index.embedder is None:
            return None
        words = embedded_words(query)
        vector = await self._vector_of(index, query, words)
        if vector is not None:
            self._stats.dense_used += 1
            return vector
        said = _normalised(query)
        for heard in reversed(self._heard_so_far):
            if (
                heard.vector is not None
                and said[: len(heard.said)] == heard.said
                and len(said) - len(heard.said) <= MAX_UNHEARD_WORDS
            ):
                self._stats.dense_heard_so_far += 1
                return heard.vector
        self._stats.dense_skipped += 1
        return None

    async def _vector_of(
        self, index: RecallIndex, query: str, words: tuple[str, ...]
    ) -> np.ndarray | None:
        if self._ready is not None and self._ready.words == words:
            return self._ready.vector
        running = self._running
        if running is None:
            if self._embed_estimate_s > self._budget_s:
                self._embed_estimate_s *= ESTIMATE_DECAY
                return None
            running = self._start(index, query, words)
        elif running.words != words:
            return None  # one embedding at a time, and that one is of stale words
        loop = asyncio.get_running_loop()
        if running.started + self._embed_estimate_s - loop.time() > self._budget_s:
            return None  # it cannot arrive within the budget: not worth waiting for
        try:
            async with asyncio.timeout(self._budget_s):
                return await asyncio.shield(running.task)
        except TimeoutError:
            logger.debug("Dense recall skipped: embedding the turn is over its time budget")
            return None

    def _embed_ahead(self, words: str) -> None:
        key = embedded_words(words)
        if not key or (self._ready is not None and self._ready.words == key):
            return
        if self._running is not None:
            if self._running.words != key:
                self._next = words  # the latest only: older words heard meanwhile are stale
            return
        assert self._index is not None
        self._start(self._index, words, key)

    def _start(self, index: RecallIndex, text: str, words: tuple[str, ...]) -> _Embedding:
        task = asyncio.create_task(asyncio.to_thread(self._timed_embedding, index, text))
        running = _Embedding(
            words=words,
            said=_normalised(text),
            task=task,
            started=asyncio.get_running_loop().time(),
        )
        self._running = running
        self._next = None
        task.add_done_callback(self._embedded)
        return running

    def _embedded(self, task: asyncio.Task[np.ndarray | None]) -> None:
        running, self._running = self._running, None
        if running is not None and not task.cancelled() and task.exception() is None:
            self._ready = _Vector(running.words, running.said, task.result())
            self._heard_so_far.append(self._ready)
        following, self._next = self._next, None
        if following is not None and not self._closed:
            self._embed_ahead(following)

    def _timed_embedding(self, index: RecallIndex, query: str) -> np.ndarray | None:
        started = time.perf_counter()
        vector = index.embed_query(query)
        self._embed_estimate_s = time.perf_counter() - started
        return vector


def _relevant(result: Recalled) -> bool:
    return result.lexical > 0 or (result.similarity or 0.0) >= MIN_SIMILARITY
