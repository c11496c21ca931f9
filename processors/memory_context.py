"""Puts what Rapport remembers about the caller in front of the LLM, without adding latency.

Memory is loaded once per call, started when the caller is identified (while the line rings).
On ``StartFrame`` this processor waits for it within a small budget, renders it into the
system prompt in place of ``{{memory}}`` (as quoted caller-reported data, see
:mod:`memory.render`) and switches the voice to the caller's language. Once the caller is
connected the call opens with a spoken line and no LLM request: the opening line the last
analysis prepared, or a greeting. On each user turn it recalls what is relevant to what was
just said and not yet in the prompt, within a time budget, in process: no turn waits on the
network.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMUpdateSettingsFrame,
    StartFrame,
    TTSSpeakFrame,
    TTSUpdateSettingsFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import LLMSettings, TTSSettings

from memory.embeddings import Embedder
from memory.errors import RapportMemoryError
from memory.language import voice_locale
from memory.models import CallerMemory, Fact
from memory.render import fill_template, render_memory
from memory.retrieval import Recalled, RecallIndex, turn_id
from memory.session import call_start_facts
from processors.call_language import CallLanguageFrame, reply_language_rule

#: Share of the call-start budget kept for choosing and rendering facts after the load.
SELECTION_SHARE = 0.2
#: Facts a call's recall index holds at most (the most confident and recent).
MAX_RECALL_FACTS = 1000
#: Most memories recalled into the prompt over one call (the prompt must stay small).
MAX_RECALLED = 8
#: Cosine similarity from which a memory sharing no word with the turn still counts as relevant.
MIN_SIMILARITY = 0.86
#: How fast a query-embedding time over the budget is forgotten, one skipped turn at a time,
#: so that a slow moment (a busy CPU) does not turn dense recall off for the whole call.
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


class MemoryContextProcessor(FrameProcessor):
    """Renders caller memory into the system prompt and recalls more on each user turn.

    Sits between the user aggregator and the LLM.

    Args:
        memory: The caller's memory, being loaded since the caller was identified; None when
            memory is off or the caller is anonymous.
        prompt_template: The system prompt with a ``{{memory}}`` placeholder.
        opening: The first words of the call, from the memory it started with (None: none)
            and the caller's language; spoken at once, so it must need no LLM request.
        voices: TTS voice by language.
        default_language: Language used until the caller's is known.
        load_budget_s: The call start's one budget: loading, selecting and rendering memory
            together; what is not ready by then is gone without.
        max_facts: Facts put in the prompt at call start.
        token_budget: Estimated tokens the memory block may take.
        purpose: What the agent is for; it steers which facts are chosen at call start.
        recall_budget_s: Time a turn may spend on recall; over it, recall is skipped.
        embedder: Adds dense relevance to recall (loaded already; None: lexical only).
    """

    def __init__(
        self,
        *,
        memory: Awaitable[CallerMemory | None] | None,
        prompt_template: str,
        opening: Callable[[CallerMemory | None, str], str],
        voices: Mapping[str, str],
        default_language: str = "en",
        load_budget_s: float = 0.15,
        max_facts: int = 10,
        token_budget: int = 400,
        purpose: str = "",
        recall_budget_s: float = 0.015,
        embedder: Embedder | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._source = memory
        self._template = prompt_template
        self._opening = opening
        self._voices = voices
        self._language = default_language
        self._reply_language: str | None = None  # stated in the prompt once the caller switched
        self._load_budget_s = load_budget_s
        self._max_facts = max_facts
        self._token_budget = token_budget
        self._purpose = purpose
        self._recall_budget_s = recall_budget_s
        self._embedder = embedder
        self._memory: CallerMemory | None = None
        self._facts: list[Fact] = []
        self._index: RecallIndex | None = None
        self._index_task: asyncio.Task[None] | None = None
        self._in_prompt: set[str] = set()
        self._recalled: list[str] = []
        self._embed_estimate_s = 0.0
        self._started = asyncio.Event()
        self._stats = MemoryStats()

    @property
    def stats(self) -> MemoryStats:
        """Load and recall timings so far (read by the call report when the call closes)."""
        return self._stats

    async def opening_frames(self) -> list[Frame]:
        """What to queue once the caller is connected: the opening line, spoken at once.

        The line goes into the context too (``TTSSpeakFrame`` appends it), so the LLM carries
        on from it when the caller answers. Waits for the call start (memory loaded or given up
        on): a transport may report the caller connected before the pipeline's ``StartFrame``
        reaches this processor.
        """
        await self._started.wait()
        return [TTSSpeakFrame(self._opening(self._memory, self._language))]

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Set the prompt up at start; recall before each LLM run."""
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            await self._start()
            return
        if isinstance(frame, LLMContextFrame) and self._index is not None:
            await self._recall(frame.context)
        await self.push_frame(frame, direction)
        if isinstance(frame, CallLanguageFrame) and direction == FrameDirection.DOWNSTREAM:
            self._language = self._reply_language = frame.language
            await self._set_prompt()

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._load_budget_s
        # The load may use the budget but for the share selection and rendering need.
        self._memory = await self._load(self._load_budget_s * (1 - SELECTION_SHARE))
        if self._memory is not None and not self._memory.is_empty:
            self._facts = await self._select(self._memory, deadline - loop.time())
            self._in_prompt = {f.id for f in self._facts} | {
                turn_id(t) for t in self._memory.recent_turns
            }
            language = (self._memory.profile.language or "").split("-")[0].lower()
            if language in self._voices:
                self._language = language
                voice = self._voices[language]
                locale = voice_locale(voice)
                delta = TTSSettings(voice=voice, language=locale)
                await self.push_frame(TTSUpdateSettingsFrame(delta=delta))
                for way in (FrameDirection.UPSTREAM, FrameDirection.DOWNSTREAM):
                    await self.push_frame(CallLanguageFrame(language=language), way)
        await self._set_prompt()
        self._started.set()
        if self._memory is not None and not self._memory.is_empty:
            self._index_task = self.create_task(self._build_index(self._memory))

    async def _set_prompt(self) -> None:
        block = render_memory(
            self._memory, self._facts, token_budget=self._token_budget, recalled=self._recalled
        )
        prompt = fill_template(self._template, block)
        if self._reply_language is not None:
            prompt += "\n\n" + reply_language_rule(self._reply_language)
        await self.push_frame(LLMUpdateSettingsFrame(delta=LLMSettings(system_instruction=prompt)))

    async def cleanup(self) -> None:
        """Stop building the recall index if the call ends first."""
        await super().cleanup()
        if self._index_task is not None:
            await self.cancel_task(self._index_task)

    async def _select(self, memory: CallerMemory, budget_s: float) -> list[Fact]:
        """The facts for the prompt, or none if choosing them would overrun the call start."""
        try:
            async with asyncio.timeout(max(budget_s, 0.0)):
                return await asyncio.to_thread(
                    call_start_facts,
                    memory,
                    purpose=self._purpose,
                    token_budget=self._token_budget,
                    max_facts=self._max_facts,
                    embedder=self._embedder,
                )
        except TimeoutError:
            logger.warning("Choosing the caller's facts overran the call start; going on without")
            return []

    async def _load(self, budget_s: float) -> CallerMemory | None:
        if self._source is None:
            return None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(budget_s):
                memory = await asyncio.shield(self._source)
            self._stats.load_met_budget = True
            return memory
        except TimeoutError:
            logger.warning("Caller memory was not ready within the load budget; going on without")
        except RapportMemoryError as e:
            await self.push_error("Caller memory could not be loaded; going on without", e)
        finally:
            self._stats.load_s = time.perf_counter() - started
        self._stats.load_met_budget = False
        return None

    async def _build_index(self, memory: CallerMemory) -> None:
        # Embeds past turns, which have no stored vector: milliseconds, so off the event loop.
        # Facts without a vector are not embedded here: the worker does it.
        self._index = await asyncio.to_thread(
            RecallIndex.from_memory,
            memory,
            embedder=self._embedder,
            embed_missing=False,
            max_facts=MAX_RECALL_FACTS,
        )

    async def _recall(self, context: LLMContext) -> None:
        index = self._index
        query = _last_user_text(context)
        if index is None or not query:
            return
        started = time.perf_counter()
        vector = await self._query_vector(index, query)
        # The search itself is a few numpy operations over one caller's memories: inline.
        found = index.search(query, k=3, exclude=self._in_prompt, query_vector=vector)
        fresh = [r for r in found if _relevant(r)]
        self._stats.recall_s.append(time.perf_counter() - started)
        if not fresh:
            return
        self._in_prompt.update(r.id for r in fresh)
        self._recalled = (self._recalled + [r.text for r in fresh])[-MAX_RECALLED:]
        await self._set_prompt()

    async def _query_vector(self, index: RecallIndex, query: str) -> np.ndarray | None:
        """Embed the turn for dense relevance, unless that would not fit the turn's budget."""
        if index.embedder is None:
            return None
        if self._embed_estimate_s > self._recall_budget_s:
            self._embed_estimate_s *= ESTIMATE_DECAY
            self._stats.dense_skipped += 1
            return None
        try:
            async with asyncio.timeout(self._recall_budget_s):
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


def _last_user_text(context: LLMContext) -> str:
    for message in reversed(context.messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
