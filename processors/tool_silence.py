"""ToolSilenceGuard: the caller never sits in silence because of a tool call.

Sits after the LLM and before TTS. Pipecat leaves the line silent in three cases:

- the LLM answers only with a tool call and its follow-up response is empty;
- a tool returns a falsy result (`None`, `{}`, `""`): Pipecat 1.14 then never re-runs the LLM
  (pipecat#4298), and likewise when the result asks for no re-run (`run_llm=False`);
- a tool runs long and nothing was said before it started;
- a tool that ends the call (``ending_tools``, e.g. ``end_call``) was called with nothing said.

The guard speaks a short phrase in the caller's language (a `TTSSpeakFrame`), at most once per
trigger: a filler ("One moment…") once a tool has run `filler_after` seconds, and a closing
phrase when the tool round ends with nothing but the filler said, or a goodbye instead when the
round called an ending tool (the call is over: no question after it). A ``TTSSpeakFrame`` a tool
pushes (the "I'll put you through now" of a transfer) counts as heard. It never speaks when the
LLM's own text was heard, and forgets everything on interruption. Set `guard.language` ("es",
"ca-ES") once the caller's language is known.

It runs in Pipecat's direct mode (no queue and task of its own: every frame of every reply
passes here, and a queue hop each is most of what a processor costs a turn), so it sees the
LLM's frames in exactly the order the LLM pushed them; its filler waits in a task of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    FunctionCallsStartedFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSSpeakFrame,
    TTSUpdateSettingsFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from memory.language import LANGUAGES, primary_language
from processors.pipecat_options import pipecat_options


@dataclass(frozen=True)
class SilencePhrases:
    """What the guard says in one language.

    Attributes:
        filler: Said while a slow tool runs.
        closing: Said when a tool round ends with nothing said.
        goodbye: Said when a tool ending the call was called with nothing said.

    """

    filler: str
    closing: str
    goodbye: str


DEFAULT_PHRASES: Mapping[str, SilencePhrases] = {
    code: SilencePhrases(language.filler, language.closing, language.goodbye)
    for code, language in LANGUAGES.items()
}


class ToolSilenceGuard(FrameProcessor):
    """Makes sure the caller hears something, exactly once, around tool calls."""

    def __init__(
        self,
        *,
        filler_after: float = 1.2,
        language: str = "en",
        phrases: Mapping[str, SilencePhrases] = DEFAULT_PHRASES,
        ending_tools: Collection[str] = (),
        **kwargs: Any,
    ) -> None:
        """Create the guard.

        Args:
            filler_after: Seconds a tool may run in silence before the filler is said.
            language: The caller's language (`"es"`, `"es-ES"`, ...); unknown ones use English.
            phrases: Phrases per primary language subtag; must include `"en"`.
            ending_tools: Tools after which the call ends (`"end_call"`): a round calling one
                gets the goodbye, never the closing question.
            **kwargs: Passed to `FrameProcessor`.

        """
        super().__init__(**pipecat_options(type(self).__name__, kwargs, direct=True))
        self._filler_after = filler_after
        self._phrases = phrases
        self._ending_tools = frozenset(ending_tools)
        self._language = "en"
        self.language = language
        self._response_had_text = False  # the latest LLM response said something
        self._tool_batches_unended = 0  # tool batches whose response end is still to come
        self._pending_calls: set[str] = set()
        self._round_heard: bool | None = None  # None outside a tool round
        self._round_ends_call = False
        self._awaiting_follow_up = False
        self._filler_said = False
        self._filler_task: asyncio.Task | None = None

    @property
    def language(self) -> str:
        """The language phrases are spoken in (a primary subtag such as `"es"`)."""
        return self._language

    @language.setter
    def language(self, language: str) -> None:
        primary = primary_language(str(language))
        self._language = primary if primary in self._phrases else "en"

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Watch LLM responses and tool calls; speak when the caller would hear nothing."""
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):
            await self._reset()
        elif isinstance(frame, (EndFrame, CancelFrame)):
            await self._cancel_filler()
        elif direction == FrameDirection.DOWNSTREAM:
            await self._watch(frame)

    async def cleanup(self) -> None:
        """Cancel a pending filler."""
        await super().cleanup()
        await self._cancel_filler()

    async def _watch(self, frame: Frame) -> None:
        if isinstance(frame, TTSUpdateSettingsFrame):
            # The voice follows the caller's language; so do the guard's phrases.
            language = frame.delta.language if frame.delta is not None else None
            if isinstance(language, str):
                self.language = language
        elif isinstance(frame, FunctionCallsStartedFrame):
            # Pushed before its own response's end, which the round then waits for.
            self._tool_batches_unended += 1
        elif isinstance(frame, LLMFullResponseStartFrame):
            self._response_had_text = False
        elif isinstance(frame, LLMTextFrame) and frame.text.strip() and not frame.skip_tts:
            self._response_had_text = True
            if self._round_heard is not None:
                self._round_heard = True
        elif isinstance(frame, TTSSpeakFrame) and self._round_heard is not None:
            self._round_heard = True  # a tool speaking for itself
        elif isinstance(frame, LLMFullResponseEndFrame):
            await self._response_ended()
        elif isinstance(frame, FunctionCallInProgressFrame) and frame.cancel_on_interruption:
            self._call_started(frame.tool_call_id)
            self._round_ends_call |= frame.function_name in self._ending_tools
        elif isinstance(frame, FunctionCallResultFrame):
            await self._call_finished(frame)

    def _call_started(self, tool_call_id: str) -> None:
        if self._round_heard is None:
            # The text of the response asking for this call was queued ahead of this frame.
            self._round_heard = self._response_had_text
            self._filler_said = False
        self._pending_calls.add(tool_call_id)
        if not self._round_heard and not self._filler_said and not self._filler_task:
            self._filler_task = self.create_task(self._say_filler_later())

    async def _call_finished(self, frame: FunctionCallResultFrame) -> None:
        if frame.tool_call_id not in self._pending_calls:
            return  # an async tool (whose results may be intermediate), or a forgotten call
        self._pending_calls.discard(frame.tool_call_id)
        if self._pending_calls:
            return
        await self._cancel_filler()
        if _llm_runs_again(frame):
            self._awaiting_follow_up = True
        else:
            await self._end_round()

    async def _response_ended(self) -> None:
        # A response that called tools is never the (empty) follow-up: either it continues the
        # round with more calls, or it is the round's opening response, ending late.
        if self._tool_batches_unended:
            self._tool_batches_unended -= 1
        elif self._awaiting_follow_up:
            await self._end_round()

    async def _end_round(self) -> None:
        heard, self._round_heard = self._round_heard, None
        ends_call, self._round_ends_call = self._round_ends_call, False
        self._awaiting_follow_up = False
        if not heard:
            phrases = self._phrases[self._language]
            line = phrases.goodbye if ends_call else phrases.closing
            await self._say(line, append_to_context=True)

    async def _say_filler_later(self) -> None:
        await asyncio.sleep(self._filler_after)
        self._filler_task = None
        self._filler_said = True
        # Kept out of the context: a turn between a tool call and its result would break the
        # tool_use/tool_result pairing Anthropic requires, and the LLM did not say it.
        await self._say(self._phrases[self._language].filler, append_to_context=False)

    async def _say(self, text: str, *, append_to_context: bool) -> None:
        await self.push_frame(TTSSpeakFrame(text, append_to_context=append_to_context))

    async def _cancel_filler(self) -> None:
        if self._filler_task:
            task, self._filler_task = self._filler_task, None
            await self.cancel_task(task)

    async def _reset(self) -> None:
        await self._cancel_filler()
        self._response_had_text = False
        self._tool_batches_unended = 0
        self._pending_calls.clear()
        self._round_heard = None
        self._round_ends_call = False
        self._awaiting_follow_up = False
        self._filler_said = False


def _llm_runs_again(frame: FunctionCallResultFrame) -> bool:
    """Whether Pipecat 1.14's assistant aggregator re-runs the LLM after this final result."""
    if not frame.result:
        return False
    if frame.properties and frame.properties.run_llm is not None:
        return frame.properties.run_llm
    return frame.run_llm is not False
