"""A phone line with no network behind it: Pipecat's own output transport, and Daily's events.

:class:`PhoneLine` stands in for a telephony transport. Its output is a real
``BaseOutputTransport`` (chunking, pacing, ``BotStartedSpeakingFrame`` /
``BotStoppedSpeakingFrame`` both ways, what the user aggregator's idle timer and the worker's
idle timeout run on) whose "line" swallows the audio; its input passes frames on, since tests
push transcriptions themselves. :class:`DailyLine` is the real ``DailyTransport``, constructed
but never joined, with the same input and output: its dial-in events are Daily's own, fired
through Pipecat's event handler API.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame, OutputAudioRawFrame, StartFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pipecat.transports.daily.transport import DailyParams, DailyTransport


class _Input(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


class _Output(BaseOutputTransport):
    """Plays audio into nowhere, at Pipecat's pace, reporting the bot's speech as it does."""

    def __init__(self) -> None:
        super().__init__(TransportParams(audio_out_enabled=True))
        self.audio_frames = 0

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        self.audio_frames += 1
        return True


class PhoneLine(BaseTransport):
    """A connected caller's line: frames in as they are queued, audio out to nowhere."""

    def __init__(self) -> None:
        super().__init__()
        self._input = _Input()
        self._output = _Output()
        self._register_event_handler("on_client_connected")
        self._register_event_handler("on_client_disconnected")

    def input(self) -> FrameProcessor:
        return self._input

    def output(self) -> FrameProcessor:
        return self._output


class DailyLine(DailyTransport):
    """Daily's transport and its events, with :class:`PhoneLine`'s input and output."""

    def __init__(self) -> None:
        super().__init__("https://rapport-test.daily.co/room", None, "Rapport", DailyParams())
        self._line_input = _Input()
        self._line_output = _Output()

    def input(self) -> FrameProcessor:  # type: ignore[override]
        return self._line_input

    def output(self) -> FrameProcessor:  # type: ignore[override]
        return self._line_output

    async def emit(self, event: str, data: object) -> None:
        """What Daily's client callback does for a dial-in event."""
        await self._call_event_handler(event, data)
