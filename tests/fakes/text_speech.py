"""Text in place of audio: a pass-through STT and a TTS that "speaks" a few ms of silence.

End-to-end call tests send ``TranscriptionFrame``s where the caller's audio would be, so the
STT only passes frames on. The TTS is a real Pipecat ``TTSService`` (text aggregation, audio
contexts, ``TTSSpeakFrame`` handling, ``TTSTextFrame``s for the assistant aggregator) whose
synthesis returns 10 ms of silence per sentence instead of calling a cloud voice.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path

from pipecat.frames.frames import Frame, InputDTMFFrame, TranscriptionFrame, TTSAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService


class TextSTT(FrameProcessor):
    """Passes every frame on: tests push transcriptions themselves.

    Over a real phone transport, where a test can only send audio, a keypad press stands in for
    speech: ``keypad`` maps a digit to what the caller "says" when they press it.
    """

    def __init__(self, *, keypad: Mapping[str, str] | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self._keypad = dict(keypad or {})

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputDTMFFrame) and frame.button.value in self._keypad:
            said = self._keypad[frame.button.value]
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            await self.push_frame(TranscriptionFrame(said, "caller", stamp), direction)
            return
        await self.push_frame(frame, direction)


class SilentTTS(TTSService):
    """A TTS service whose voice is 10 ms of silence per sentence."""

    def __init__(self, *, spoken_log: Path | None = None, **kwargs: object) -> None:
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
        # As the cloud voices do: TTFB and characters, which the call report counts.
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
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
