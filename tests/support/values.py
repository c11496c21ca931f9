"""Values the tests share: one pepper for every caller key (``RAPPORT_PEPPER`` as text)."""

from __future__ import annotations

import uuid
from typing import Any

from bot.settings import BotSettings

PEPPER = "test-pepper-0123456789abcdef0123"
PEPPER_BYTES = PEPPER.encode()
#: The key the fake Anthropic server accepts.
API_KEY = "test-key"


def new_key_prefix() -> str:
    """A key prefix no other test uses, e.g. ``rapport-test-1a2b3c4d``."""
    return f"rapport-test-{uuid.uuid4().hex[:8]}"


def service_settings(**extra: Any) -> BotSettings:
    """Bot settings with every cloud service's key set (to placeholders)."""
    return BotSettings(
        DEEPGRAM_API_KEY="d",
        ANTHROPIC_API_KEY="a",
        AZURE_SPEECH_KEY="z",
        AZURE_SPEECH_REGION="westeurope",
        **extra,
    )
