"""What the agent is told (the system prompt) and what it says first when a call connects.

The system prompt template is a file (``RAPPORT_PROMPT_FILE``, default ``bot/prompts/system.md``)
with ``{{business_name}}`` and ``{{purpose}}``, filled in here once per process, ``{{hours}}``,
filled in at each call's start by :func:`with_hours`, and ``{{memory}}``, filled in per call by
``MemoryContextProcessor``.
"""

from __future__ import annotations

import re
from datetime import datetime

from bot.hours import BusinessHours
from bot.settings import BotSettings
from memory.language import spoken
from memory.models import CallerMemory

#: The conversation sent to the LLM opens with this user turn: the agent speaks first on a
#: phone call, but the Messages API (Bedrock and gateways strictly) wants a user turn first.
CALL_CONNECTED = "[The call connected.]"

# The agent's lines in every language it speaks (one record per language: memory.language).
GREETINGS = spoken("greeting")
RETURNING_GREETINGS = spoken("returning_greeting")
STILL_THERE = spoken("still_there")
IDLE_GOODBYES = spoken("idle_goodbye")
PUTTING_THROUGH = spoken("putting_through")
TRANSFER_FAILED = spoken("transfer_failed")
SERVICE_DOWN_PUTTING_THROUGH = spoken("service_down_putting_through")
SERVICE_DOWN_CALL_BACK = spoken("service_down_call_back")
SERVICE_DOWN_TRY_LATER = spoken("service_down_try_later")

#: What a call back Rapport placed opens with (``bot.callback``), and its reason by default.
CALLBACK_OPENINGS = spoken("callback_opening")
CALLBACK_REASONS = spoken("callback_reason")

_BUSINESS = re.compile(r"\{\{\s*business_name\s*\}\}")
_PURPOSE = re.compile(r"\{\{\s*purpose\s*\}\}")
_HOURS = re.compile(r"\{\{\s*hours\s*\}\}")


def opening_line(memory: CallerMemory | None, language: str, *, business_name: str) -> str:
    """What the agent says the moment a call connects, with no LLM request.

    A returning caller hears the line their last analysis prepared (already in their language,
    scrubbed), else the returning greeting by name; anyone else hears the first-time greeting.

    Args:
        memory: The memory the call started with; None when there is none.
        language: The call's language (``en``, ``es``…); unknown ones fall back to English.
        business_name: Who the agent answers for.
    """
    if memory is not None and memory.is_returning:
        if memory.profile.opening_line:
            return memory.profile.opening_line
        name = f", {memory.profile.name}" if memory.profile.name else ""
        template = RETURNING_GREETINGS.get(language, RETURNING_GREETINGS["en"])
        return template.format(business=business_name, name=name)
    return GREETINGS.get(language, GREETINGS["en"]).format(business=business_name)


def callback_opening(
    memory: CallerMemory | None, reason: str, *, business_name: str, language: str
) -> str:
    """The first words of a call back: the caller by name when known, and why we call.

    Args:
        memory: The caller's memory (their name), None when there is none.
        reason: What the call back is about ("the burst pipe"); empty: the caller's last call.
        business_name: Who is calling.
        language: The caller's language (unknown ones fall back to English).
    """
    name = memory.profile.name if memory is not None and memory.profile.name else ""
    known = language if language in CALLBACK_OPENINGS else "en"
    return CALLBACK_OPENINGS[known].format(
        name=f" {name}" if name else "",
        business=business_name,
        reason=reason or CALLBACK_REASONS[known],
    )


def prompt_template(settings: BotSettings) -> str:
    """The system prompt template with the business filled in; ``{{memory}}`` is left.

    Raises:
        ConfigurationError: The prompt file cannot be read.
    """
    template = settings.system_prompt_template()
    template = _BUSINESS.sub(lambda _: settings.business_name, template)
    return _PURPOSE.sub(lambda _: settings.agent_purpose, template)


def with_hours(template: str, hours: BusinessHours | None, at: datetime) -> str:
    """The template with ``{{hours}}`` replaced by the hours and whether it is open at ``at``.

    The placeholder is removed when no hours are set.
    """
    return _HOURS.sub(lambda _: hours.prompt_note(at) if hours is not None else "", template)
