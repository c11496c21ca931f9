"""The call's language follows the caller: the voice, the fillers and the reply language switch.

Deepgram's nova-3 with ``language=multi`` tags each final transcript with the language it heard
(``TranscriptionFrame.language``). When that is a language the business serves (one with a voice)
and not the call's current one, the call switches, once per change: a ``TTSUpdateSettingsFrame``
for the voice (the ``ToolSilenceGuard`` follows it too) and a :class:`CallLanguageFrame`, on
which ``MemoryContextProcessor`` states the reply language in the prompt. Both are pushed from
the STT right before the transcript that caused them, so that turn is answered in the new
language.

:class:`CallLanguage` is not a processor of its own: it reads the STT's pushes as they happen
(Pipecat's synchronous ``on_before_push_frame`` event), where the transcripts are anyway. A
processor right after the STT did the same, and cost every frame of the call, audio included,
one more queue and task switch.

The rule against flapping: a switch needs final transcripts in the new language, in a row, of
at least :data:`SWITCH_WORDS` words together. "OK" or "sí" in a call in another language does
not switch it; "Hola, quería pedir una cita" does. A transcript in the current language starts
the count again; one with no language, or one the business does not serve, leaves it alone.

The call starts in the default language, or in the language a returning caller's memory gives:
``MemoryContextProcessor`` sends a :class:`CallLanguageFrame` upstream at call start; the STT
passes it on, and :class:`CallLanguage` takes it as the current language without switching
anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from pipecat.frames.frames import ControlFrame, Frame, TranscriptionFrame, TTSUpdateSettingsFrame
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.settings import TTSSettings

from memory.language import LANGUAGES

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


class CallLanguage:
    """Switches the call's voice and reply language when the caller changes language.

    Args:
        voices: TTS settings (voice and locale) per served language, the keys primary subtags.
        language: The language the call starts in (a returning caller's may replace it).
    """

    def __init__(self, *, voices: Mapping[str, TTSSettings], language: str) -> None:
        self._voices = voices
        self._language = primary_language(language)
        self._candidate: str | None = None
        self._candidate_words = 0

    @property
    def language(self) -> str:
        """The call's current language (a primary subtag); what the analysis is told."""
        return self._language

    def follow(self, stt: FrameProcessor) -> None:
        """Read the transcripts ``stt`` pushes; a switch is pushed from it, before them."""
        stt.add_event_handler("on_before_push_frame", self._on_stt_push)

    async def _on_stt_push(self, stt: FrameProcessor, frame: Frame) -> None:
        # Only the start language goes upstream through the STT; transcripts go downstream.
        if isinstance(frame, CallLanguageFrame):
            self._language = frame.language  # the caller's stored language, or a switch
            self._candidate = None
        elif isinstance(frame, TranscriptionFrame) and frame.language is not None:
            await self._heard(stt, primary_language(frame.language), len(frame.text.split()))

    async def _heard(self, stt: FrameProcessor, language: str, words: int) -> None:
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
        await stt.push_frame(voice)
        await stt.push_frame(CallLanguageFrame(language=language))
