"""The demo's week at a small dental clinic in Barcelona: 20 calls from 8 callers, in 3 languages.

What each caller says, what the agent answers, and what the analysis concludes, written out for
``python runner.py demo`` (:mod:`cli.demo.play`) and played by its scripted model
(:mod:`cli.demo.model`). The week covers what the dashboard shows on a real one: urgent
call-backs, a caller who rang twice about the same thing, a new fact replacing an old one, a
caller put through to the dentist on call, a call whose analysis failed for good (a dead letter),
calls needing nothing, and the clinic's own fields (``examples/clinic_fields.yaml``).

The numbers are in the North American range set aside for fiction (555-0100 to 555-0199), so
nobody real is ever called back from the demo's data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cli.demo.model import ModelReply, last_user_text
from memory.analysis.analyzer import TOOL_NAME
from memory.recall.render import quoted

BUSINESS = "Clínica Dental Rambla, Barcelona"
#: Where ``transfer_call`` puts a caller through: the dentist on call (never dialled: the demo's
#: line hands over to nobody).
DENTIST_ON_CALL = "+12125550100"
#: What the model says to anything the week does not script.
_UNSCRIPTED = ModelReply(text="Let me note that down for the clinic.")
_KNOWN_FACT = re.compile(r"^- id=(?P<id>\S+) \(confidence [0-9.]+\): (?P<text>.*)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Caller:
    """Someone who calls the clinic: their number and the language they speak."""

    number: str
    language: str


@dataclass(frozen=True, slots=True)
class Exchange:
    """The caller says ``said``; the agent answers ``reply`` (words, or ending the call)."""

    said: str
    reply: ModelReply


@dataclass(frozen=True, slots=True)
class DemoCall:
    """One call of the week.

    Attributes:
        caller: Who calls.
        exchanges: What is said, in order; the last reply ends the call (``end_call``) or puts
            the caller through (``transfer_call``).
        analysis: The analysis tool's answer. A fact's ``supersedes`` names the texts of the
            known facts it replaces (the scripted model finds their ids in the prompt, as Claude
            would). None: the model answers without calling the tool, so the analysis fails.
    """

    caller: Caller
    exchanges: tuple[Exchange, ...]
    analysis: Mapping[str, Any] | None = field(default=None)


def _bye(text: str) -> ModelReply:
    return ModelReply(text=text, tool="end_call", arguments={"reason": "caller said goodbye"})


ANA = Caller("+1 212 555 0101", "es")
JORDI = Caller("+1 212 555 0102", "ca")
EMILY = Caller("+1 212 555 0103", "en")
CARLOS = Caller("+1 212 555 0104", "es")
MARTA = Caller("+1 212 555 0105", "ca")
DAVID = Caller("+1 415 555 0106", "en")
LAURA = Caller("+1 212 555 0107", "ca")
PABLO = Caller("+1 212 555 0108", "es")


def _analysis(
    summary: str,
    *,
    urgency: int,
    action: str,
    sentiment: str,
    language: str,
    name: str | None,
    opening: str | None = None,
    facts: Sequence[Mapping[str, Any]] = (),
    fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "summary": summary,
        "urgency": urgency,
        "action": action,
        "sentiment": sentiment,
        "language": language,
        "caller_name": name,
        "opening_line": opening,
        "facts": list(facts),
        "fields": dict(fields or {}),
    }


def _fact(text: str, kind: str, confidence: float, *, supersedes: Sequence[str] = ()) -> dict:
    return {"text": text, "kind": kind, "confidence": confidence, "supersedes": list(supersedes)}


EIXAMPLE = "Caller prefers the Eixample clinic"
PABLO_PROMISE = "Caller was promised a call about a double charge"

#: The week, in rounds: a round's calls come from different callers, and every call of a round
#: is analysed before the next round rings (so a second call hears what the first one left).
WEEK: tuple[tuple[DemoCall, ...], ...] = (
    (
        DemoCall(
            ANA,
            (
                Exchange(
                    "Hola, soy Ana García. Me duele mucho una muela desde anoche, "
                    "¿me pueden ver hoy?",
                    ModelReply(
                        text="Lo siento mucho, Ana. Lo marco como urgente y la clínica la "
                        "llamará en menos de una hora para darle hora hoy."
                    ),
                ),
                Exchange(
                    "Gracias. Prefiero la clínica del Eixample, me queda al lado de casa.",
                    _bye("Anotado: el Eixample. ¡Hasta ahora, Ana!"),
                ),
            ),
            _analysis(
                "Ana García has had a strong toothache since last night and asked to be seen "
                "today; the agent promised a call back within the hour.",
                urgency=5,
                action="call_back",
                sentiment="frustrated",
                language="es-ES",
                name="Ana García",
                opening="Hola Ana, ¿cómo sigue esa muela?",
                facts=[_fact(EIXAMPLE, "preference", 0.9)],
                fields={"appointment_type": "emergency", "symptoms": ["toothache"]},
            ),
        ),
        DemoCall(
            JORDI,
            (
                Exchange(
                    "Bon dia, sóc en Jordi Puig. Voldria demanar hora per a una neteja.",
                    ModelReply(
                        text="Bon dia, Jordi. Tenim hores dimarts i dijous. Quin dia li va millor?"
                    ),
                ),
                Exchange(
                    "Dijous, a primera hora. Només puc venir als matins.",
                    _bye("Perfecte, ho deixo anotat i la clínica li confirmarà l'hora. Adéu!"),
                ),
            ),
            _analysis(
                "Jordi Puig wants a cleaning on Thursday, first thing in the morning; the clinic "
                "is to confirm the time.",
                urgency=2,
                action="book_appointment",
                sentiment="neutral",
                language="ca-ES",
                name="Jordi Puig",
                opening="Hola Jordi! Truca per la neteja de dijous?",
                facts=[_fact("Caller can only come in the mornings", "constraint", 0.9)],
                fields={"appointment_type": "cleaning", "preferred_time": "09:00"},
            ),
        ),
        DemoCall(
            EMILY,
            (
                Exchange(
                    "Hi, I'm Emily Carter. I'm visiting Barcelona and my crown just came off. "
                    "It really hurts.",
                    ModelReply(
                        tool="transfer_call",
                        arguments={"reason": "emergency: lost crown, in pain"},
                    ),
                ),
            ),
            _analysis(
                "Emily Carter, visiting Barcelona, lost a crown and is in pain; she was put "
                "through to the dentist on call.",
                urgency=5,
                action="call_back",
                sentiment="frustrated",
                language="en-US",
                name="Emily Carter",
                opening="Hi Emily, how is that crown holding up?",
                facts=[_fact("Caller is visiting Barcelona for a week", "constraint", 0.8)],
                fields={
                    "appointment_type": "emergency",
                    "new_patient": True,
                    "symptoms": ["lost crown", "pain"],
                },
            ),
        ),
        DemoCall(
            CARLOS,
            (
                Exchange(
                    "Buenas, quería saber cuánto cuesta un blanqueamiento.",
                    ModelReply(
                        text="El blanqueamiento en clínica cuesta desde 290 euros. "
                        "¿Quiere que le enviemos un presupuesto detallado?"
                    ),
                ),
                Exchange(
                    "Sí, por favor, envíenmelo por correo.",
                    _bye("Hecho, se lo enviamos hoy. ¡Que tenga un buen día!"),
                ),
            ),
            _analysis(
                "The caller asked the price of a teeth whitening and wants a detailed quote by "
                "email.",
                urgency=2,
                action="send_quote",
                sentiment="neutral",
                language="es-ES",
                name=None,
                facts=[_fact("Caller prefers to receive quotes by email", "preference", 0.85)],
            ),
        ),
        DemoCall(
            MARTA,
            (
                Exchange(
                    "Hola, sóc la Marta Soler. Treballeu amb la mútua Sanitas?",
                    ModelReply(text="Sí, treballem amb Sanitas per a revisions i neteges."),
                ),
                Exchange(
                    "Molt bé. Doncs voldria una revisió el mes que ve.",
                    _bye("Perfecte, Marta, la clínica la trucarà per triar el dia. Fins aviat!"),
                ),
            ),
            _analysis(
                "Marta Soler, insured with Sanitas, wants a checkup next month; the clinic is to "
                "call her to pick a day.",
                urgency=2,
                action="call_back",
                sentiment="satisfied",
                language="ca-ES",
                name="Marta Soler",
                opening="Hola Marta! Truca per la revisió del mes que ve?",
                facts=[_fact("Caller is insured with Sanitas", "identifier", 0.9)],
                fields={"appointment_type": "checkup", "insurance_provider": "Sanitas"},
            ),
        ),
        DemoCall(
            DAVID,
            (
                Exchange(
                    "Hello, this is David Chen. We just moved here and need a checkup for the "
                    "whole family.",
                    ModelReply(text="Welcome to Barcelona, David! How many of you are there?"),
                ),
                Exchange(
                    "Three of us: me, my wife and our daughter. Saturdays would be best.",
                    _bye("Noted: three checkups, Saturdays. We'll call you to book. Goodbye!"),
                ),
            ),
            _analysis(
                "David Chen, new in Barcelona, wants checkups for his family of three, "
                "preferably on a Saturday.",
                urgency=3,
                action="book_appointment",
                sentiment="satisfied",
                language="en-US",
                name="David Chen",
                opening="Hi David, shall we find that Saturday for your family's checkups?",
                facts=[
                    _fact("Caller prefers Saturday appointments", "preference", 0.9),
                    _fact("Caller books for a family of three", "need", 0.8),
                ],
                fields={"appointment_type": "checkup", "new_patient": True, "party_size": 3},
            ),
        ),
        DemoCall(
            LAURA,
            (
                Exchange(
                    "Hola, sóc la Laura Martí. Haig d'anul·lar la cita de demà, tinc feina.",
                    ModelReply(
                        text="Cap problema, Laura, queda anul·lada. Vol que li busquem una "
                        "altra hora?"
                    ),
                ),
                Exchange(
                    "Ara no, ja trucaré la setmana que ve.",
                    _bye("D'acord. Gràcies per avisar, adéu!"),
                ),
            ),
            _analysis(
                "Laura Martí cancelled tomorrow's appointment because of work; she will call "
                "again next week.",
                urgency=1,
                action="none",
                sentiment="neutral",
                language="ca-ES",
                name="Laura Martí",
            ),
        ),
        DemoCall(
            PABLO,
            (
                Exchange(
                    "Hola, llamo por la factura del mes pasado: creo que me cobraron dos veces.",
                    ModelReply(text="Lo siento. Tomo nota y administración lo revisará."),
                ),
                Exchange(
                    "Vale, gracias. Es la factura de la limpieza.",
                    _bye("De nada, le llamaremos. ¡Adiós!"),
                ),
            ),
            None,
        ),
    ),
    (
        DemoCall(
            ANA,
            (
                Exchange(
                    "Nadie me ha llamado todavía y el dolor va a más.",
                    ModelReply(
                        text="Perdone, Ana. Vuelvo a marcarlo como urgente: la llamarán enseguida."
                    ),
                ),
                Exchange("Por favor, cuanto antes.", _bye("Entendido. ¡Hasta ahora!")),
            ),
            _analysis(
                "Ana García called again: nobody has called her back yet and the toothache is "
                "getting worse.",
                urgency=5,
                action="call_back",
                sentiment="frustrated",
                language="es-ES",
                name="Ana García",
                opening="Hola Ana, ¿ya la han atendido?",
                fields={"appointment_type": "emergency", "symptoms": ["toothache", "worse"]},
            ),
        ),
        DemoCall(
            JORDI,
            (
                Exchange(
                    "Hola, sóc en Jordi. Puc canviar la neteja de dijous a divendres?",
                    ModelReply(text="És clar, Jordi. Divendres a les nou, li va bé?"),
                ),
                Exchange("Perfecte, gràcies!", _bye("Fet. Bon dia!")),
            ),
            _analysis(
                "Jordi Puig moved his cleaning from Thursday to Friday at 9:00.",
                urgency=2,
                action="book_appointment",
                sentiment="satisfied",
                language="ca-ES",
                name="Jordi Puig",
                opening="Hola Jordi! Ens veiem divendres a les nou?",
                facts=[_fact("Caller's cleaning is on Friday at 9:00", "commitment", 0.8)],
                fields={"appointment_type": "cleaning", "preferred_time": "09:00"},
            ),
        ),
        DemoCall(
            CARLOS,
            (
                Exchange(
                    "Hola, soy Carlos Ruiz, llamé antes por el blanqueamiento. "
                    "¿Se puede pagar a plazos?",
                    ModelReply(
                        text="Sí, Carlos, en tres plazos sin intereses. Lo añadimos al presupuesto."
                    ),
                ),
                Exchange("Genial, espero el correo.", _bye("Gracias, Carlos. ¡Adiós!")),
            ),
            _analysis(
                "Carlos Ruiz called back about the whitening quote: he wants to pay in "
                "instalments.",
                urgency=2,
                action="send_quote",
                sentiment="satisfied",
                language="es-ES",
                name="Carlos Ruiz",
                facts=[_fact("Caller wants to pay in instalments", "need", 0.7)],
            ),
        ),
        DemoCall(
            EMILY,
            (
                Exchange(
                    "Hi, it's Emily again. The dentist fixed my crown, thank you! "
                    "Do I need another visit?",
                    ModelReply(
                        text="So glad, Emily. The dentist suggests a quick check in a week."
                    ),
                ),
                Exchange(
                    "I fly home on Sunday. Could someone call me to find a time before that?",
                    _bye("Of course, we'll call you to arrange it. Take care!"),
                ),
            ),
            _analysis(
                "Emily Carter's crown was fixed; she needs a check before she flies home on "
                "Sunday and asked to be called to arrange it.",
                urgency=3,
                action="call_back",
                sentiment="satisfied",
                language="en-US",
                name="Emily Carter",
                facts=[_fact("Caller flies home on Sunday", "constraint", 0.85)],
                fields={"appointment_type": "checkup"},
            ),
        ),
        DemoCall(
            DAVID,
            (
                Exchange(
                    "Hi, David Chen again. Do you accept Adeslas insurance?",
                    ModelReply(text="Yes, we work with Adeslas for checkups and cleanings."),
                ),
                Exchange(
                    "Great, that's ours. Thanks!",
                    _bye("You're welcome, David. Goodbye!"),
                ),
            ),
            _analysis(
                "David Chen checked that the clinic accepts his Adeslas insurance.",
                urgency=3,
                action="book_appointment",
                sentiment="satisfied",
                language="en-US",
                name="David Chen",
                facts=[_fact("Caller is insured with Adeslas", "identifier", 0.9)],
                fields={"appointment_type": "checkup", "insurance_provider": "Adeslas"},
            ),
        ),
        DemoCall(
            PABLO,
            (
                Exchange(
                    "Hola, soy Pablo Navarro, llamé ayer por el cobro doble.",
                    ModelReply(
                        text="Gracias, Pablo. Administración lo está revisando y le llamará hoy."
                    ),
                ),
                Exchange("Vale, espero la llamada.", _bye("Hasta luego, Pablo.")),
            ),
            _analysis(
                "Pablo Navarro says he was charged twice for a cleaning last month and is "
                "waiting for a call from the front desk.",
                urgency=4,
                action="call_back",
                sentiment="frustrated",
                language="es-ES",
                name="Pablo Navarro",
                opening="Hola Pablo, ¿le han llamado ya por la factura?",
                facts=[
                    _fact("Caller was promised a call about a double charge", "commitment", 0.8)
                ],
            ),
        ),
    ),
    (
        DemoCall(
            ANA,
            (
                Exchange(
                    "Hola, soy Ana. Ya estoy mejor, gracias. Me he mudado a Gràcia: a partir de "
                    "ahora prefiero la clínica de Gràcia.",
                    ModelReply(text="Qué bien, Ana. Anotado: a partir de ahora, Gràcia."),
                ),
                Exchange(
                    "Y necesito la revisión de seguimiento la semana que viene, por la tarde.",
                    _bye("Perfecto, la llamaremos para darle hora. ¡Adiós!"),
                ),
            ),
            _analysis(
                "Ana García is better; she moved and now prefers the Gràcia clinic, and needs a "
                "follow-up checkup next week in the afternoon.",
                urgency=3,
                action="book_appointment",
                sentiment="satisfied",
                language="es-ES",
                name="Ana García",
                opening="Hola Ana, ¿buscamos la hora de su revisión en Gràcia?",
                facts=[
                    _fact(
                        "Caller now prefers the Gràcia clinic",
                        "preference",
                        0.9,
                        supersedes=[EIXAMPLE],
                    ),
                    _fact("Caller prefers afternoon appointments", "preference", 0.8),
                ],
                fields={"appointment_type": "checkup", "preferred_time": "17:00"},
            ),
        ),
        DemoCall(
            CARLOS,
            (
                Exchange(
                    "Perdone, soy Carlos otra vez: no me ha llegado el presupuesto.",
                    ModelReply(text="Lo siento, Carlos. Se lo reenviamos ahora mismo."),
                ),
                Exchange("Gracias.", _bye("A usted. ¡Adiós!")),
            ),
            _analysis(
                "Carlos Ruiz has not received the whitening quote yet; it is to be sent again.",
                urgency=3,
                action="send_quote",
                sentiment="frustrated",
                language="es-ES",
                name="Carlos Ruiz",
            ),
        ),
        DemoCall(
            DAVID,
            (
                Exchange(
                    "Hi, it's David. Could we do this Saturday morning for all three of us?",
                    ModelReply(text="This Saturday at ten works for three checkups."),
                ),
                Exchange("Perfect, please book it.", _bye("Noted. See you Saturday, David!")),
            ),
            _analysis(
                "David Chen asked for three checkups this Saturday at ten; the front desk must "
                "confirm the booking.",
                urgency=2,
                action="book_appointment",
                sentiment="satisfied",
                language="en-US",
                name="David Chen",
                fields={"appointment_type": "checkup", "preferred_time": "10:00", "party_size": 3},
            ),
        ),
        DemoCall(
            LAURA,
            (
                Exchange(
                    "Hola, sóc la Laura Martí. Ara sí que voldria una nova hora per a la revisió.",
                    ModelReply(text="Molt bé, Laura. Tenim dilluns a les cinc de la tarda."),
                ),
                Exchange("Perfecte, me la quedo.", _bye("Apuntada. Fins dilluns!")),
            ),
            _analysis(
                "Laura Martí wants a new checkup appointment: Monday at 17:00 suits her.",
                urgency=2,
                action="book_appointment",
                sentiment="satisfied",
                language="ca-ES",
                name="Laura Martí",
                fields={"appointment_type": "checkup", "preferred_time": "17:00"},
            ),
        ),
    ),
    (
        DemoCall(
            JORDI,
            (
                Exchange(
                    "Hola, sóc en Jordi. Divendres m'ha sortit feina: em podeu trucar per buscar "
                    "un altre matí?",
                    ModelReply(text="Cap problema, Jordi. La clínica el trucarà."),
                ),
                Exchange("Gràcies!", _bye("A vostè. Adéu!")),
            ),
            _analysis(
                "Jordi Puig cannot make Friday's cleaning and asked to be called to find another "
                "morning.",
                urgency=3,
                action="call_back",
                sentiment="neutral",
                language="ca-ES",
                name="Jordi Puig",
                fields={"appointment_type": "cleaning"},
            ),
        ),
        DemoCall(
            MARTA,
            (
                Exchange(
                    "Hola, sóc la Marta. La revisió amb Sanitas inclou radiografies?",
                    ModelReply(text="Sí, Marta, la revisió amb Sanitas inclou les radiografies."),
                ),
                Exchange("Perfecte, gràcies.", _bye("De res. Adéu!")),
            ),
            _analysis(
                "Marta Soler asked whether her Sanitas checkup includes X-rays; it does.",
                urgency=1,
                action="none",
                sentiment="satisfied",
                language="ca-ES",
                name="Marta Soler",
            ),
        ),
    ),
)


class WeekScript:
    """What the scripted model answers during the week: the :class:`cli.demo.model.Script`.

    Args:
        week: The calls, in rounds (each caller's words must be unique within the week).
    """

    def __init__(self, week: Sequence[Sequence[DemoCall]]) -> None:
        calls = [call for round_ in week for call in round_]
        self._replies = {
            exchange.said: exchange.reply for call in calls for exchange in call.exchanges
        }
        self._analyses = {f"Caller: {quoted(call.exchanges[0].said)}": call for call in calls}

    def reply(self, body: Mapping[str, Any]) -> ModelReply:
        """The agent's line for what the caller last said, or the analysis of a call."""
        if (body.get("tool_choice") or {}).get("name") == TOOL_NAME:
            return self._analysis(body)
        said = last_user_text(body)
        if not said:
            return ModelReply()  # after a tool's result: nothing more to say
        return self._replies.get(said, _UNSCRIPTED)

    def _analysis(self, body: Mapping[str, Any]) -> ModelReply:
        prompt = last_user_text(body)
        call = next((call for line, call in self._analyses.items() if line in prompt), None)
        if call is None or call.analysis is None:
            return ModelReply(text="I cannot analyse this call.")
        answer = dict(call.analysis)
        known = {match["text"]: match["id"] for match in _KNOWN_FACT.finditer(prompt)}
        answer["facts"] = [
            {
                **fact,
                "supersedes": [known[q] for q in map(quoted, fact["supersedes"]) if q in known],
            }
            for fact in answer["facts"]
        ]
        tool = next(tool for tool in body.get("tools", []) if tool.get("name") == TOOL_NAME)
        if "fields" not in tool["input_schema"]["properties"]:
            del answer["fields"]  # the business asked for no fields of its own
        return ModelReply(tool=TOOL_NAME, arguments=answer)


def _ids(known: Mapping[str, str], texts: Sequence[str]) -> list[str]:
    """The ids of the known facts (by their quoted text in the prompt) that ``texts`` name."""
    return [known[text] for text in map(quoted, texts) if text in known]
