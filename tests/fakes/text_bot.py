"""``python runner.py`` with text in place of audio, for tests that start the real server.

Everything is the bot's own serving path (settings check, Pipecat's development runner, our
TwiML route, ``bot()`` from ``runner.py``, the pipeline, memory, the Anthropic service at
``ANTHROPIC_BASE_URL``); only the STT and TTS are ``tests.fakes.text_speech``'s, injected through
``run_bot(services=...)``. Run with the repository root on ``PYTHONPATH``.
"""

from __future__ import annotations

import sys

from anthropic import AsyncAnthropic

from bot.main import run_bot
from bot.services import CallServices, build_llm
from bot.settings import BotSettings
from runner import bot  # noqa: F401 - the development runner calls ``__main__.bot``
from tests.fakes.text_speech import SilentTTS, TextSTT


def text_services(
    settings: BotSettings, *, client: AsyncAnthropic, system_instruction: str
) -> CallServices:
    """The real LLM service between a pass-through STT and a silent TTS."""
    llm = build_llm(settings, client=client, system_instruction=system_instruction)
    return CallServices(stt=TextSTT(), llm=llm, tts=SilentTTS())


if __name__ == "__main__":
    sys.exit(run_bot(sys.argv[1:], services=text_services))
