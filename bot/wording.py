"""What the agent is told (the system prompt) and what it says first when a call connects.

The system prompt template is a file (``RAPPORT_PROMPT_FILE``, default ``bot/prompts/system.md``)
with ``{{business_name}}`` and ``{{purpose}}``, filled in here once per process, ``{{hours}}``,
filled in at each call's start by :func:`with_hours`, and ``{{memory}}``, filled in per call by
``MemoryContextProcessor``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from bot.hours import BusinessHours
from bot.settings import BotSettings
from memory.models import CallerMemory

#: The conversation sent to the LLM opens with this user turn: the agent speaks first on a
#: phone call, but the Messages API (Bedrock and gateways strictly) wants a user turn first.
CALL_CONNECTED = "[The call connected.]"

#: First-time callers hear this, in the default language, before saying anything.
GREETINGS: Mapping[str, str] = {
    "en": "Hello, you're through to {business}. How can I help you today?",
    "es": "Hola, ha llamado a {business}. ¿En qué puedo ayudarle?",
    "ca": "Hola, heu trucat a {business}. En què us puc ajudar?",
}

#: A returning caller with no opening line prepared (older profile, failed analysis) hears this.
RETURNING_GREETINGS: Mapping[str, str] = {
    "en": "Hello again{name}, you're through to {business}. How can I help you today?",
    "es": "Hola de nuevo{name}, ha llamado a {business}. ¿En qué puedo ayudarle?",
    "ca": "Hola de nou{name}, heu trucat a {business}. En què us puc ajudar?",
}

#: Said once when the caller has been silent for ``RAPPORT_SILENCE_CHECK_S``.
STILL_THERE: Mapping[str, str] = {
    "en": "Are you still there?",
    "es": "¿Sigue ahí?",
    "ca": "Encara hi sou?",
}

#: Said before hanging up on a caller who stayed silent until ``RAPPORT_IDLE_TIMEOUT_S``.
IDLE_GOODBYES: Mapping[str, str] = {
    "en": "I can't hear you, so I'll end the call now. Please call back any time. Goodbye!",
    "es": "No le oigo, así que voy a colgar. Llámenos cuando quiera. ¡Adiós!",
    "ca": "No us sento, així que penjaré. Truqueu-nos quan vulgueu. Adéu!",
}

#: Said just before the caller is handed to a person (``transfer_call``).
PUTTING_THROUGH: Mapping[str, str] = {
    "en": "I'll put you through now. Please hold.",
    "es": "Le paso con una persona ahora. Un momento, por favor.",
    "ca": "Us passo amb una persona ara. Un moment, si us plau.",
}

#: Said when the transport could not hand the caller over after all; the call goes on.
TRANSFER_FAILED: Mapping[str, str] = {
    "en": "I'm sorry, I couldn't put you through. Can I take a message instead?",
    "es": "Lo siento, no he podido pasarle la llamada. ¿Quiere dejar un mensaje?",
    "ca": "Ho sento, no us he pogut passar la trucada. Voleu deixar un missatge?",
}

#: Spoken by the carrier's own voice (Twilio's ``<Say>``) when the call's speech-to-text or
#: text-to-speech failed, before the caller is put through to a person.
SERVICE_DOWN_PUTTING_THROUGH: Mapping[str, str] = {
    "en": "We're sorry, we're having a technical problem. Putting you through to someone now.",
    "es": "Disculpe, tenemos un problema técnico. Le pasamos con una persona ahora.",
    "ca": "Disculpeu, tenim un problema tècnic. Us passem amb una persona ara.",
}

#: ... when nobody can take the call: the business calls the (recorded) caller back.
SERVICE_DOWN_CALL_BACK: Mapping[str, str] = {
    "en": "We're sorry, we're having a technical problem and can't take your call right now. "
    "{business} will call you back as soon as possible. Goodbye.",
    "es": "Disculpe, tenemos un problema técnico y no podemos atenderle ahora. "
    "{business} le devolverá la llamada lo antes posible. Adiós.",
    "ca": "Disculpeu, tenim un problema tècnic i no us podem atendre ara. "
    "{business} us tornarà la trucada tan aviat com pugui. Adéu.",
}

#: ... when nobody can take the call and the caller is not recorded (withheld number).
SERVICE_DOWN_TRY_LATER: Mapping[str, str] = {
    "en": "We're sorry, we're having a technical problem and can't take your call right now. "
    "Please call {business} again a little later. Goodbye.",
    "es": "Disculpe, tenemos un problema técnico y no podemos atenderle ahora. "
    "Por favor, llame de nuevo a {business} un poco más tarde. Adiós.",
    "ca": "Disculpeu, tenim un problema tècnic i no us podem atendre ara. "
    "Si us plau, torneu a trucar a {business} una mica més tard. Adéu.",
}

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
