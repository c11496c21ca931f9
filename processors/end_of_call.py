"""Records the call as it happens and, however it ends, hands it to the post-call analysis.

Sits at the very end of the pipeline, after the assistant aggregator, where every finished
turn passes: the caller's (``LLMContextUserTurnFrame``) and the agent's spoken text
(``LLMContextAssistantTurnFrame``). Storage is the recorder's job, off the frame path, so a
turn never waits on Redis and shutdown never waits on the analysis queue.

Every frame that reaches the end passes here anyway, so the call report reads the frames it
times here too (``watch``), instead of an observer being handed every frame of the call. Nothing
here waits, so it runs in Pipecat's direct mode: each frame is handled in the task that pushed
it, with no queue hop of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    LLMContextAssistantTurnFrame,
    LLMContextUserTurnFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from memory.calls.recorder import CallRecorder
from processors.call_language import CallLanguageFrame
from processors.pipecat_options import pipecat_options


class EndOfCallProcessor(FrameProcessor):
    """Feeds each finished turn to the call's recorder and finishes it on every way out.

    Args:
        recorder: The call's recorder; None for anonymous callers or with memory off, which
            makes this processor a pass-through.
        language: The language the call starts in; each ``CallLanguageFrame`` replaces it, and
            the call is recorded with the last one.
        watch: Told of every frame that reaches the end of the pipeline, before the call is
            finished with it (the call report's meter); it must not block.
    """

    def __init__(
        self,
        *,
        recorder: CallRecorder | None,
        language: str | None = None,
        watch: Callable[[Frame, FrameDirection], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**pipecat_options(type(self).__name__, kwargs, direct=True))
        self._recorder = recorder
        self._language = language
        self._watch = watch

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Record turns going downstream; finish the call on ``EndFrame`` or ``CancelFrame``."""
        await super().process_frame(frame, direction)
        if self._watch is not None:
            self._watch(frame, direction)
        recorder = self._recorder
        if recorder is not None and direction == FrameDirection.DOWNSTREAM:
            if isinstance(frame, LLMContextUserTurnFrame):
                recorder.add_turn("user", frame.text)
            elif isinstance(frame, LLMContextAssistantTurnFrame):
                recorder.add_turn("assistant", frame.text)
            elif isinstance(frame, CallLanguageFrame):
                self._language = frame.language
        if recorder is not None and isinstance(frame, (EndFrame, CancelFrame)):
            recorder.finish(_ended_reason(frame), language=self._language)
        await self.push_frame(frame, direction)


def _ended_reason(frame: EndFrame | CancelFrame) -> str:
    kind = "ended" if isinstance(frame, EndFrame) else "cancelled"
    return f"{kind}: {str(frame.reason)[:200]}" if frame.reason else kind
