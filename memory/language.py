"""Languages as Rapport meets them: tags, voices, and every word the agent says in each.

Adding a language is one entry in :data:`LANGUAGES` (and its voice in ``RAPPORT_VOICES`` if
the default should change): the greetings, the check-in, the fillers, the transfer lines and the
prompt's "reply in ..." name all come from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Language:
    """One language the agent speaks: its name, its default voice and what it says.

    Attributes:
        name: How the prompt names it ("reply in Spanish").
        voice: The Azure neural voice that speaks it by default.
        greeting: A first-time caller's greeting (``{business}``).
        returning_greeting: A returning caller's, when no opening line was prepared
            (``{name}`` is ", Ana" or empty, ``{business}``).
        still_there: The check-in after a silence.
        idle_goodbye: Said before hanging up on a caller who stayed silent.
        putting_through: Said just before a transfer.
        transfer_failed: Said when the transfer could not be made; the call goes on.
        filler: Said while a slow tool runs.
        closing: Said when a tool round ends with nothing said.
        goodbye: Said when a tool ending the call was called with nothing said.
        service_down_putting_through: Said in the carrier's own voice (Twilio's ``<Say>``) when
            the call's speech-to-text or text-to-speech failed, before a transfer.
        service_down_call_back: ... when nobody can take the call: the business calls the
            (recorded) caller back (``{business}``).
        service_down_try_later: ... when nobody can take the call and the caller is not
            recorded (withheld number) (``{business}``).
        callback_opening: What a call back Rapport placed opens with, once the caller answers
            (``{name}`` is " Ana" or empty, ``{business}``, ``{reason}``).
        callback_reason: The reason a call back gives when the person asking gave none.
    """

    name: str
    voice: str
    greeting: str
    returning_greeting: str
    still_there: str
    idle_goodbye: str
    putting_through: str
    transfer_failed: str
    filler: str
    closing: str
    goodbye: str
    service_down_putting_through: str
    service_down_call_back: str
    service_down_try_later: str
    callback_opening: str
    callback_reason: str


#: Every language the agent speaks, by primary subtag; English is the fallback.
LANGUAGES: Mapping[str, Language] = {
    "en": Language(
        name="English",
        voice="en-US-AvaMultilingualNeural",
        greeting="Hello, you're through to {business}. How can I help you today?",
        returning_greeting=(
            "Hello again{name}, you're through to {business}. How can I help you today?"
        ),
        still_there="Are you still there?",
        idle_goodbye=(
            "I can't hear you, so I'll end the call now. Please call back any time. Goodbye!"
        ),
        putting_through="I'll put you through now. Please hold.",
        transfer_failed="I'm sorry, I couldn't put you through. Can I take a message instead?",
        filler="One moment…",
        closing="All right. Is there anything else I can help with?",
        goodbye="Thank you for calling. Goodbye!",
        service_down_putting_through=(
            "We're sorry, we're having a technical problem. Putting you through to someone now."
        ),
        service_down_call_back=(
            "We're sorry, we're having a technical problem and can't take your call right now. "
            "{business} will call you back as soon as possible. Goodbye."
        ),
        service_down_try_later=(
            "We're sorry, we're having a technical problem and can't take your call right now. "
            "Please call {business} again a little later. Goodbye."
        ),
        callback_opening="Hi{name}, this is {business} calling back about {reason}.",
        callback_reason="your last call",
    ),
    "es": Language(
        name="Spanish",
        voice="es-ES-ElviraNeural",
        greeting="Hola, ha llamado a {business}. ¿En qué puedo ayudarle?",
        returning_greeting="Hola de nuevo{name}, ha llamado a {business}. ¿En qué puedo ayudarle?",
        still_there="¿Sigue ahí?",
        idle_goodbye="No le oigo, así que voy a colgar. Llámenos cuando quiera. ¡Adiós!",
        putting_through="Le paso con una persona ahora. Un momento, por favor.",
        transfer_failed="Lo siento, no he podido pasarle la llamada. ¿Quiere dejar un mensaje?",
        filler="Un momento…",
        closing="De acuerdo. ¿Puedo ayudarle en algo más?",
        goodbye="Gracias por llamar. ¡Adiós!",
        service_down_putting_through=(
            "Disculpe, tenemos un problema técnico. Le pasamos con una persona ahora."
        ),
        service_down_call_back=(
            "Disculpe, tenemos un problema técnico y no podemos atenderle ahora. "
            "{business} le devolverá la llamada lo antes posible. Adiós."
        ),
        service_down_try_later=(
            "Disculpe, tenemos un problema técnico y no podemos atenderle ahora. "
            "Por favor, llame de nuevo a {business} un poco más tarde. Adiós."
        ),
        callback_opening="Hola{name}, le llamamos de {business} por {reason}.",
        callback_reason="su última llamada",
    ),
    "ca": Language(
        name="Catalan",
        voice="ca-ES-JoanaNeural",
        greeting="Hola, heu trucat a {business}. En què us puc ajudar?",
        returning_greeting="Hola de nou{name}, heu trucat a {business}. En què us puc ajudar?",
        still_there="Encara hi sou?",
        idle_goodbye="No us sento, així que penjaré. Truqueu-nos quan vulgueu. Adéu!",
        putting_through="Us passo amb una persona ara. Un moment, si us plau.",
        transfer_failed="Ho sento, no us he pogut passar la trucada. Voleu deixar un missatge?",
        filler="Un moment…",
        closing="D'acord. Us puc ajudar en alguna cosa més?",
        goodbye="Gràcies per trucar. Adéu!",
        service_down_putting_through=(
            "Disculpeu, tenim un problema tècnic. Us passem amb una persona ara."
        ),
        service_down_call_back=(
            "Disculpeu, tenim un problema tècnic i no us podem atendre ara. "
            "{business} us tornarà la trucada tan aviat com pugui. Adéu."
        ),
        service_down_try_later=(
            "Disculpeu, tenim un problema tècnic i no us podem atendre ara. "
            "Si us plau, torneu a trucar a {business} una mica més tard. Adéu."
        ),
        callback_opening="Hola{name}, us truquem de {business} per {reason}.",
        callback_reason="la vostra última trucada",
    ),
}


def spoken(field: str) -> Mapping[str, str]:
    """One line in every language, by primary subtag: ``spoken("still_there")["es"]``."""
    return {code: getattr(language, field) for code, language in LANGUAGES.items()}


def primary_language(tag: str) -> str:
    """The primary subtag of a language tag, lower-cased: ``es-ES`` -> ``es``."""
    return tag.split("-")[0].lower()


def voice_locale(voice: str) -> str:
    """The locale an Azure voice speaks: ``es-ES-ElviraNeural`` -> ``es-ES``."""
    return "-".join(voice.split("-")[:2])
