"""What the agent is told (the system prompt) and what it says first to a new caller.

The system prompt template is a file (``RAPPORT_PROMPT_FILE``, default ``bot/prompts/system.md``)
with ``{{business_name}}`` and ``{{purpose}}``, filled in here once per process, and
``{{memory}}``, filled in per call by ``MemoryContextProcessor``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from bot.settings import BotSettings

#: First-time callers hear this, in the default language, before saying anything.
GREETINGS: Mapping[str, str] = {
    "en": "Hello, you're through to {business}. How can I help you today?",
    "es": "Hola, ha llamado a {business}. ¿En qué puedo ayudarle?",
    "ca": "Hola, heu trucat a {business}. En què us puc ajudar?",
}

_BUSINESS = re.compile(r"\{\{\s*business_name\s*\}\}")
_PURPOSE = re.compile(r"\{\{\s*purpose\s*\}\}")


def greetings(business_name: str) -> dict[str, str]:
    """The first-time greeting per language, naming the business."""
    return {language: text.format(business=business_name) for language, text in GREETINGS.items()}


def prompt_template(settings: BotSettings) -> str:
    """The system prompt template with the business filled in; ``{{memory}}`` is left.

    Raises:
        ConfigurationError: The prompt file cannot be read.
    """
    template = settings.system_prompt_template()
    template = _BUSINESS.sub(lambda _: settings.business_name, template)
    return _PURPOSE.sub(lambda _: settings.agent_purpose, template)
