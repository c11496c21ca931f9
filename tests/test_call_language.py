"""The call's language follows the caller: voice, guard phrases and reply language, once each.

The processors are chained as in the call (the STT, which the call language follows, memory
processor, guard) and fed final ``TranscriptionFrame``s tagged with a language, as Deepgram's
nova-3 ``multi`` tags them, through ``pipecat.tests.utils.run_test``.
"""

from __future__ import annotations

from collections.abc import Sequence

from anthropic import AsyncAnthropic
from pipecat.frames.frames import (
    Frame,
    InterimTranscriptionFrame,
    LLMUpdateSettingsFrame,
    TranscriptionFrame,
    TTSUpdateSettingsFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.settings import TTSSettings
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.transcriptions.language import Language

from bot.services import build_services, voice_locale
from bot.settings import BotSettings
from bot.text_line import TextSTT
from bot.wording import opening_line
from memory.models import CallerMemory, CallerProfile
from processors.call_language import CallLanguage, CallLanguageFrame, reply_language_rule
from processors.memory_context import MemoryContextProcessor
from processors.tool_silence import ToolSilenceGuard
from tests.support.values import service_settings

VOICES = BotSettings().voices
TEMPLATE = "You answer the phone for Acme.\n\n{{memory}}"


class Call:
    """The language-aware part of a call's pipeline, starting in English."""

    def __init__(self, memory: CallerMemory | None = None) -> None:
        self.language = CallLanguage(
            voices={
                lang: TTSSettings(voice=v, language=voice_locale(v)) for lang, v in VOICES.items()
            },
            language="en",
        )
        stt = TextSTT()
        self.language.follow(stt)

        async def loaded() -> CallerMemory | None:
            return memory

        self.memory = MemoryContextProcessor(
            memory=loaded(),
            prompt_template=TEMPLATE,
            opening=lambda m, lang: opening_line(m, lang, business_name="Acme"),
            voices=VOICES,
        )
        self.guard = ToolSilenceGuard(language="en")
        self.pipeline = Pipeline([stt, self.memory, self.guard])

    async def hears(self, *said: tuple[str, str | None]) -> list[Frame]:
        frames: list[Frame] = [SleepFrame(sleep=0.2)]
        for text, language in said:
            tag = Language(language) if language else None
            frames.append(TranscriptionFrame(text, "caller", "now", tag))
        frames.append(SleepFrame(sleep=0.1))
        down, _ = await run_test(self.pipeline, frames_to_send=frames)
        return list(down)


def voices(frames: Sequence[Frame]) -> list[tuple[str | None, str | None]]:
    return [
        (f.delta.voice, f.delta.language) for f in frames if isinstance(f, TTSUpdateSettingsFrame)
    ]


def prompts(frames: Sequence[Frame]) -> list[str]:
    return [f.delta.system_instruction for f in frames if isinstance(f, LLMUpdateSettingsFrame)]


async def test_a_first_time_caller_s_spanish_then_catalan_switch_voice_guard_and_prompt() -> None:
    call = Call()
    down = await call.hears(
        ("Hola, quería pedir una cita para mañana", "es"),
        ("Perdó, millor en català si us plau", "ca"),
    )
    assert voices(down) == [("es-ES-ElviraNeural", "es-ES"), ("ca-ES-JoanaNeural", "ca-ES")]
    assert [f.language for f in down if isinstance(f, CallLanguageFrame)] == ["es", "ca"]
    start, spanish, catalan = prompts(down)
    assert "reply in" not in start
    assert spanish.endswith(reply_language_rule("es")) and "Spanish" in spanish
    assert catalan.endswith(reply_language_rule("ca")) and "Spanish" not in catalan
    assert call.guard.language == "ca" and call.language.language == "ca"
    # Each switch comes before the transcript that caused it: that turn is answered in it.
    kinds = [type(f) for f in down if not isinstance(f, LLMUpdateSettingsFrame)]
    assert kinds == [
        TTSUpdateSettingsFrame,
        CallLanguageFrame,
        TranscriptionFrame,
        TTSUpdateSettingsFrame,
        CallLanguageFrame,
        TranscriptionFrame,
    ]


async def test_a_single_english_word_in_a_spanish_call_does_not_switch_back() -> None:
    call = Call()
    down = await call.hears(
        ("Hola, quería pedir una cita", "es"),
        ("OK", "en"),
        ("¿Tienen hueco el jueves?", "es"),
        ("Sorry", "en"),
        ("perfecto", "es"),
    )
    assert voices(down) == [("es-ES-ElviraNeural", "es-ES")]
    assert call.guard.language == "es" and call.language.language == "es"


async def test_short_turns_switch_once_they_add_up_and_unserved_languages_never() -> None:
    call = Call()
    down = await call.hears(
        ("Bonjour, je voudrais un rendez-vous demain", "fr"),  # not served: no voice for it
        ("Hola", "es"),
        ("buenos días", "es"),  # three words in a row in Spanish: not yet
        ("", None),
        ("una cita", "es"),  # five: switch
    )
    assert voices(down) == [("es-ES-ElviraNeural", "es-ES")]
    assert call.language.language == "es"


async def test_interim_transcripts_never_switch() -> None:
    call = Call()
    frames = [
        SleepFrame(sleep=0.2),
        InterimTranscriptionFrame("Hola, quería pedir una cita", "caller", "now", Language.ES),
        SleepFrame(sleep=0.1),
    ]
    down, _ = await run_test(call.pipeline, frames_to_send=frames)
    assert voices(down) == [] and call.language.language == "en"


async def test_a_returning_caller_starts_in_their_stored_language() -> None:
    memory = CallerMemory(profile=CallerProfile(name="Lucía", call_count=1, language="es-ES"))
    call = Call(memory)
    down = await call.hears(
        ("Hola, soy Lucía otra vez, ¿qué tal?", "es"),  # already Spanish: nothing to switch
        ("Could we continue in English please", "en"),
    )
    assert voices(down) == [
        ("es-ES-ElviraNeural", "es-ES"),  # the memory processor, at call start
        ("en-US-AvaMultilingualNeural", "en-US"),
    ]
    assert prompts(down)[-1].endswith(reply_language_rule("en"))
    assert call.guard.language == "en"


async def test_deepgram_is_hinted_towards_the_served_languages() -> None:
    settings = service_settings()
    async with AsyncAnthropic(api_key="a") as client:
        services = build_services(settings, client=client, system_instruction="")
    stt = services.stt
    assert isinstance(stt, DeepgramSTTService)
    query = stt._build_connect_kwargs()  # what goes on the WebSocket's query string
    assert (query["model"], query["language"]) == ("nova-3", "multi")
    assert query["language_hint"] == ["en", "es", "ca"]
