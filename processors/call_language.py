"""The call's language follows the caller: the voice, the fillers and the reply language switch.

Sits right after STT. Deepgram's nova-3 with ``language=multi`` tags each final transcript with
the language it heard (``TranscriptionFrame.language``). When that is a language the business
serves (one with a voice) and not the call's current one, the call switches, once per change:
a ``TTSUpdateSettingsFrame`` for the voice (the ``ToolSilenceGuard`` follows it too) and a
:class:`CallLanguageFrame`, on which ``MemoryContextProcessor`` states the reply language in the
prompt.

The rule against flapping: a switch needs final transcripts in the new language, in a row, of
at least :data:`SWITCH_WORDS` words together. "OK" or "sí" in a call in another language does
not switch it; "Hola, quería pedir una cita" does. A transcript in the current language starts
the count again; one with no language, or one the business does not serve, leaves it alone.

The call starts in the default language, or in the language a returning caller's memory gives:
``MemoryContextProcessor`` sends a :class:`CallLanguageFrame` upstream at call start, and this
processor takes it as the current language without switching anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pipecat.frames.frames import ControlFrame, Frame, TranscriptionFrame, TTSUpdateSettingsFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import TTSSettings

from memory.language import LANGUAGES
from processors.pipecat_options import pipecat_options

#: Words the caller must say in a new language, over consecutive final transcripts, to switch.
SWITCH_WORDS = 4

#: How the prompt names each language it may be told to reply in.
LANGUAGE_NAMES: Mapping[str, str] = {code: language.name for code, language in LANGUAGES.items()}


@dataclass
class CallLanguageFrame(ControlFrame):
    """The call's language, as a primary subtag (``"es"``): set at call start or switched.

    Ordered with the transcripts around it and never dropped by an interruption: the turn that
    switched the language must be answered in it.

    Attributes:
        language: The call's language from now on.
    """

    language: str
    interruptible: bool = field(default=False, init=False)


def primary_language(language: object) -> str:
    """The primary subtag of a language tag or Pipecat ``Language``: ``es-ES`` -> ``es``."""
    return str(language).split("-")[0].lower()


def reply_language_rule(language: str) -> str:
    """The prompt's line stating the language to reply in."""
    name = LANGUAGE_NAMES.get(language, language)
    return f"The caller is now speaking {name}: reply in {name} unless they switch again."


class CallLanguageProcessor(FrameProcessor):
    """Switches the call's voice and reply language when the caller changes language.

    Args:
        voices: TTS settings (voice and locale) per served language, the keys primary subtags.
        language: The language the call starts in (a returning caller's may replace it).
    """

    def __init__(self, *, voices: Mapping[str, TTSSettings], language: str, **kwargs: Any) -> None:
        super().__init__(**pipecat_options(type(self).__name__, kwargs))
        self._voices = voices
        self._language = primary_language(language)
        self._candidate: str | None = None
        self._candidate_words = 0

    @property
    def language(self) -> str:
        """The call's current language (a primary subtag); what the analysis is told."""
        return self._language

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Adopt the start language; switch on enough transcripts in another served language."""
        await super().process_frame(frame, direction)
        if isinstance(frame, CallLanguageFrame) and direction == FrameDirection.UPSTREAM:
            self._language = frame.language  # the caller's stored language, at call start
            self._candidate = None
            return
        if isinstance(frame, TranscriptionFrame) and frame.language is not None:
            await self._heard(primary_language(frame.language), len(frame.text.split()))
        await self.push_frame(frame, direction)

    async def _heard(self, language: str, words: int) -> None:
        if language == self._language:
            self._candidate = None
            return
        if language not in self._voices:
            return
        if language != self._candidate:
            self._candidate, self._candidate_words = language, 0
        self._candidate_words += words
        if self._candidate_words < SWITCH_WORDS:
            return
        self._language, self._candidate = language, None
        voice = TTSUpdateSettingsFrame(delta=replace(self._voices[language]))
        voice.interruptible = False
        await self.push_frame(voice)
        await self.push_frame(CallLanguageFrame(language=language))
