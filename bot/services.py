"""The cloud services of a call, built from settings: Deepgram STT, Anthropic LLM, Azure TTS.

:func:`build_services` is the production factory. Tests pass their own :class:`CallServices`
(text in place of audio for STT and TTS) while keeping the real ``AnthropicLLMService`` from
:func:`build_llm`, pointed at a local fake of the Messages API through ``ANTHROPIC_BASE_URL``.
One ``AsyncAnthropic`` client serves every call of the process (:func:`anthropic_client`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from anthropic import AsyncAnthropic
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.anthropic.llm import AnthropicLLMService
from pipecat.services.azure.tts import AzureTTSService
from pipecat.services.deepgram.stt import DeepgramSTTService

from bot.settings import KEYS_FOR_SERVICES, BotSettings
from memory.language import voice_locale

#: Pipecat 1.14 runs only the last ``tool_use`` block of a response (the others get no result),
#: and its Anthropic adapter ignores ``LLMContext.tool_choice``: ask for one tool call at a time
#: in the request itself. Only valid with tools configured (the API rejects it without).
ONE_TOOL_CALL_AT_A_TIME = {"type": "auto", "disable_parallel_tool_use": True}


@dataclass(slots=True)
class CallServices:
    """The three services one call's pipeline runs (each instance serves one call)."""

    stt: FrameProcessor
    llm: AnthropicLLMService
    tts: FrameProcessor


class ServicesFactory(Protocol):
    """Builds one call's services (:func:`build_services` in production)."""

    def __call__(
        self, settings: BotSettings, *, client: AsyncAnthropic, system_instruction: str
    ) -> CallServices:
        """Build the services of one call."""
        ...


def anthropic_client(settings: BotSettings) -> AsyncAnthropic:
    """The process's Anthropic client: shared by every call, so connections stay warm.

    Raises:
        ConfigurationError: ``ANTHROPIC_API_KEY`` is missing.
    """
    settings.require("ANTHROPIC_API_KEY")
    return AsyncAnthropic(api_key=settings.anthropic_api_key, base_url=settings.llm_base_url)


def build_llm(
    settings: BotSettings, *, client: AsyncAnthropic, system_instruction: str
) -> AnthropicLLMService:
    """The Anthropic LLM of one call, through the process's ``client``."""
    return AnthropicLLMService(
        api_key=client.api_key or "",
        client=client,
        settings=AnthropicLLMService.Settings(
            model=settings.llm_model,
            system_instruction=system_instruction,
            max_tokens=1024,
            extra={"tool_choice": ONE_TOOL_CALL_AT_A_TIME},
        ),
    )


def build_services(
    settings: BotSettings, *, client: AsyncAnthropic, system_instruction: str
) -> CallServices:
    """Deepgram nova-3 (multilingual), the Anthropic LLM and Azure TTS in the default language.

    Raises:
        ConfigurationError: One or more service keys are missing (all are named at once).
    """
    settings.require(*KEYS_FOR_SERVICES)
    # Nova-3 multilingual takes language hints on the streaming endpoint too (deepgram-sdk
    # 7.15+, ``language_hint`` repeated per language); Pipecat's settings have no field for it,
    # so it goes through ``extra``, which reaches the connection's query string as a list.
    hints = settings.stt_language == "multi" and settings.stt_model.startswith("nova-3")
    stt = DeepgramSTTService(
        api_key=settings.deepgram_api_key or "",
        settings=DeepgramSTTService.Settings(
            model=settings.stt_model,
            language=settings.stt_language,
            smart_format=True,
            extra={"language_hint": list(settings.voices)} if hints else {},
        ),
    )
    voice = settings.voices[settings.default_language]
    tts = AzureTTSService(
        api_key=settings.azure_speech_key or "",
        region=settings.azure_speech_region,
        settings=AzureTTSService.Settings(voice=voice, language=voice_locale(voice)),
    )
    llm = build_llm(settings, client=client, system_instruction=system_instruction)
    return CallServices(stt=stt, llm=llm, tts=tts)
