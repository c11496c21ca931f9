"""Puts what Rapport remembers about the caller in front of the LLM, without adding latency.

Memory is loaded once per call, started when the caller is identified (while the line rings).
On ``StartFrame`` this processor waits for it within one budget (load, selection and rendering
together), renders it into the system prompt in place of ``{{memory}}`` (as quoted
caller-reported data, see :mod:`memory.recall.render`) and switches the voice to the caller's
language. Once the caller is connected the call opens with a spoken line and no LLM request: the
opening line the last analysis prepared, or a greeting. Before each LLM run it lets
:class:`memory.recall.turns.TurnRecall` bring up what is relevant to what was just said: the
processor holds only the frame handling. So that the dense half of recall is ready when the turn
is, :meth:`MemoryContextProcessor.listen` hands the recall the caller's words as the STT pushes
them, interim transcripts included (the user aggregator consumes those before they get here).

Like Rapport's other processors it runs in Pipecat's direct mode: each frame is handled in the
task that pushed it, with no queue and task of its own, which is most of what a processor costs
a turn. A queued processor had one more guarantee, kept here by hand: an interruption cancels the
turn it holds. A turn that was interrupted while its recall ran is dropped, as the cancelled
process task of a queued processor would have dropped it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMUpdateSettingsFrame,
    StartFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    TTSUpdateSettingsFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import LLMSettings, TTSSettings
from pydantic import BaseModel, Field

from memory.errors import RapportMemoryError
from memory.language import primary_language, voice_locale
from memory.models import CallerMemory, Fact
from memory.recall.embeddings import Embedder
from memory.recall.ranking import call_start_facts, turn_id
from memory.recall.render import RECENT_TURNS_SHOWN, fill_template, render_memory
from memory.recall.turns import MemoryStats, TurnRecall
from processors.call_language import CallLanguageFrame, reply_language_rule
from processors.pipecat_options import pipecat_options

#: Share of the call-start budget kept for choosing and rendering facts after the load.
SELECTION_SHARE = 0.2


class MemoryContextProcessor(FrameProcessor):
    """Renders caller memory into the system prompt and recalls more on each user turn.

    Sits between the user aggregator and the LLM.

    Args:
        memory: The caller's memory for the call start, being loaded since the caller was
            identified (see :func:`memory.recall.call_start.load_call_start`); None when memory
            is off or the caller is anonymous.
        prompt_template: The system prompt with a ``{{memory}}`` placeholder.
        opening: The first words of the call, from the memory it started with (None: none)
            and the caller's language; spoken at once, so it must need no LLM request.
        voices: TTS voice by language.
        embedder: Adds dense relevance to selection and recall (loaded already; None: lexical).
        params: Budgets and sizes.
        load_all: Loads all of the caller's memory, for per-turn recall, when the call start's
            memory holds only part of it (read after the call start, never on its path).
    """

    class Params(BaseModel):
        """How much memory a call gets, and how long it may take.

        Parameters
        ----------
            default_language: Language used until the caller's is known.
            load_budget_s: The call start's one budget: loading, selecting and rendering memory
                together; what is not ready by then is gone without.
            max_facts: Facts put in the prompt at call start.
            token_budget: Estimated tokens the memory block may take.
            purpose: What the agent is for; it steers which facts are chosen at call start.
            recall_budget_s: Time a turn may spend on recall; over it, dense recall is skipped.
        """

        default_language: str = "en"
        load_budget_s: float = Field(default=0.15, gt=0)
        max_facts: int = Field(default=10, ge=0)
        token_budget: int = Field(default=400, gt=0)
        purpose: str = ""
        recall_budget_s: float = Field(default=0.015, gt=0)

    def __init__(
        self,
        *,
        memory: Awaitable[CallerMemory | None] | None,
        prompt_template: str,
        opening: Callable[[CallerMemory | None, str], str],
        voices: Mapping[str, str],
        embedder: Embedder | None = None,
        params: Params | None = None,
        load_all: Callable[[], Awaitable[CallerMemory | None]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**pipecat_options(type(self).__name__, kwargs, direct=True))
        self._params = params or MemoryContextProcessor.Params()
        self._source = memory
        self._template = prompt_template
        self._opening = opening
        self._voices = voices
        self._embedder = embedder
        self._load_all = load_all
        self._language = self._params.default_language
        self._reply_language: str | None = None  # stated in the prompt once the caller switched
        self._memory: CallerMemory | None = None
        self._facts: list[Fact] = []
        self._stats = MemoryStats()
        self._recall = TurnRecall(
            budget_s=self._params.recall_budget_s, embedder=embedder, stats=self._stats
        )
        self._index_task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self._interruptions = 0

    @property
    def stats(self) -> MemoryStats:
        """Load and recall timings so far (read by the call report when the call closes)."""
        return self._stats

    def listen(self, stt: FrameProcessor) -> None:
        """Hear the caller's words as ``stt`` pushes them, to embed them while they speak."""
        stt.add_event_handler("on_before_push_frame", self._on_stt_push)

    async def _on_stt_push(self, _stt: FrameProcessor, frame: Frame) -> None:
        if isinstance(frame, TranscriptionFrame):
            self._recall.hear(frame.text, final=True)
        elif isinstance(frame, InterimTranscriptionFrame):
            self._recall.hear(frame.text, final=False)

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
        if isinstance(frame, InterruptionFrame):
            self._interruptions += 1
        elif isinstance(frame, LLMContextFrame) and self._recall.ready:
            interruptions = self._interruptions
            if await self._recall.recall(_last_user_text(frame.context)):
                await self._set_prompt()
            if self._interruptions != interruptions:
                return  # the caller spoke again meanwhile: this turn is superseded
        await self.push_frame(frame, direction)
        if isinstance(frame, CallLanguageFrame) and direction == FrameDirection.DOWNSTREAM:
            self._language = self._reply_language = frame.language
            await self._set_prompt()

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        budget_s = self._params.load_budget_s
        deadline = loop.time() + budget_s
        # The load may use the budget but for the share selection and rendering need.
        self._memory = await self._load(budget_s * (1 - SELECTION_SHARE))
        if self._memory is not None and not self._memory.is_empty:
            self._facts = await self._select(self._memory, deadline - loop.time())
            language = primary_language(self._memory.profile.language or "")
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
            in_prompt = {f.id for f in self._facts} | {
                turn_id(t) for t in self._memory.recent_turns[-RECENT_TURNS_SHOWN:]
            }
            self._index_task = self.create_task(self._build_recall(self._memory, in_prompt))

    async def _build_recall(self, memory: CallerMemory, in_prompt: set[str]) -> None:
        """Index the caller's memory for per-turn recall, all of it when the start had part."""
        if not memory.complete and self._load_all is not None:
            try:
                memory = await self._load_all() or memory
            except RapportMemoryError as e:
                await self.push_error("The rest of the caller's memory could not be loaded", e)
        await self._recall.build(memory, in_prompt=in_prompt)

    async def _set_prompt(self) -> None:
        block = render_memory(
            self._memory,
            self._facts,
            token_budget=self._params.token_budget,
            recalled=self._recall.recalled,
        )
        prompt = fill_template(self._template, block)
        if self._reply_language is not None:
            prompt += "\n\n" + reply_language_rule(self._reply_language)
        await self.push_frame(LLMUpdateSettingsFrame(delta=LLMSettings(system_instruction=prompt)))

    async def cleanup(self) -> None:
        """Stop building the recall index if the call ends first, and embedding ahead."""
        await super().cleanup()
        if self._index_task is not None:
            await self.cancel_task(self._index_task)
        self._recall.close()

    async def _select(self, memory: CallerMemory, budget_s: float) -> list[Fact]:
        """The facts for the prompt, or none if choosing them would overrun the call start."""
        try:
            async with asyncio.timeout(max(budget_s, 0.0)):
                return await asyncio.to_thread(
                    call_start_facts,
                    memory,
                    purpose=self._params.purpose,
                    token_budget=self._params.token_budget,
                    max_facts=self._params.max_facts,
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


def _last_user_text(context: LLMContext) -> str:
    for message in reversed(context.messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
