"""TwiML Rapport hands Twilio: dialling a number or SIP address, saying a line first.

Built without Pipecat, so the dashboard and the command line (which place call backs, see
:mod:`bot.callback`) share it with the bot's hand-offs (:mod:`bot.transfer`). Every value is
XML-escaped.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr


def _dial(target: str, caller_id: str | None = None) -> str:
    noun = "Sip" if target.lower().startswith(("sip:", "sips:")) else "Number"
    dial = f"<Dial callerId={quoteattr(caller_id)}>" if caller_id else "<Dial>"
    return f"{dial}<{noun}>{escape(target)}</{noun}></Dial>"


def dial_twiml(target: str) -> str:
    """TwiML that dials ``target``: ``<Number>`` for a phone number, ``<Sip>`` for an address."""
    return f"<Response>{_dial(target)}</Response>"


def hand_on_twiml(
    *, say: str, locale: str, target: str | None, caller_id: str | None = None
) -> str:
    """TwiML that says ``say`` in Twilio's own voice for ``locale``, then dials or hangs up.

    ``caller_id`` is the number the dialled party sees (default: the call's own caller id).
    """
    spoken = f'<Say language="{escape(locale)}">{escape(say)}</Say>'
    then = _dial(target, caller_id) if target else "<Hangup/>"
    return f"<Response>{spoken}{then}</Response>"
