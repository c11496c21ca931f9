"""A call in text, with no audio and no network: the demo's line, and the tests'.

``python runner.py demo`` and the end-to-end tests put words where the caller's audio would be,
as ``TranscriptionFrame``s, so :class:`TextSTT` only passes frames on. :class:`SilentTTS` is a
real Pipecat ``TTSService`` (text aggregation, audio contexts, ``TTSSpeakFrame`` handling,
``TTSTextFrame``s for the assistant aggregator) whose synthesis returns 10 ms of silence per
sentence instead of calling a cloud voice. :class:`TextLine` stands in for a telephony
transport: a real ``BaseOutputTransport`` (chunking, pacing, ``BotStartedSpeakingFrame`` /
``BotStoppedSpeakingFrame``, what the idle timers and a transfer's hand-off wait on) whose line
swallows the audio.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any

from pipecat.frames.frames import (
    Frame,
    InputDTMFFrame,
    OutputAudioRawFrame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams


class TextSTT(FrameProcessor):
    """Passes every frame on: the demo and the tests push transcriptions themselves.

    Over a real phone transport, where a test can only send audio, a keypad press stands in for
    speech: ``keypad`` maps a digit to what the caller "says" when they press it.
    """

    def __init__(self, *, keypad: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._keypad = dict(keypad or {})

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Pass every frame on; a keypad press in ``keypad`` becomes what the caller said."""
        await super().process_frame(frame, direction)
        if isinstance(frame, InputDTMFFrame) and frame.button.value in self._keypad:
            said = self._keypad[frame.button.value]
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            await self.push_frame(TranscriptionFrame(said, "caller", stamp), direction)
            return
        await self.push_frame(frame, direction)


class SilentTTS(TTSService):
    """A TTS service whose voice is 10 ms of silence per sentence."""

    def __init__(self, *, spoken_log: Path | None = None, **kwargs: Any) -> None:
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            stop_frame_timeout_s=0.05,
            settings=TTSSettings(model=None, voice=None, language=None),
            **kwargs,
        )
        self.spoken: list[str] = []
        self._spoken_log = spoken_log

    def can_generate_metrics(self) -> bool:
        """True: TTFB and characters are measured."""
        # As the cloud voices do: TTFB and characters, which the call report counts.
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Note ``text`` as spoken; its audio is 10 ms of silence."""
        self.spoken.append(text)
        await self.start_tts_usage_metrics(text)  # as the cloud services' run_tts do
        if self._spoken_log is not None:
            with self._spoken_log.open("a", encoding="utf-8") as log:
                log.write(text.strip() + "\n")
        yield TTSAudioRawFrame(
            audio=bytes(self.sample_rate // 100 * 2),
            sample_rate=self.sample_rate,
            num_channels=1,
            context_id=context_id,
        )


class LineInput(FrameProcessor):
    """A text line's input: frames queued on the call pass on as they are."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Pass every frame on."""
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


class LineOutput(BaseOutputTransport):
    """Plays audio into nowhere, at Pipecat's pace, reporting the bot's speech as it does."""

    def __init__(self) -> None:
        super().__init__(TransportParams(audio_out_enabled=True))

    async def start(self, frame: StartFrame) -> None:
        """Start, then report the transport ready (there is nothing to connect)."""
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """The line swallows the frame."""
        return True


class TextLine(BaseTransport):
    """A connected caller's line: frames in as they are queued, audio out to nowhere."""

    def __init__(self) -> None:
        super().__init__()
        self._input = LineInput()
        self._output = LineOutput()
        self._register_event_handler("on_client_connected")
        self._register_event_handler("on_client_disconnected")

    def input(self) -> FrameProcessor:
        """The line's input processor."""
        return self._input

    def output(self) -> LineOutput:
        """The line's output transport."""
        return self._output
