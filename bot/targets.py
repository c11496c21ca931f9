"""Where a call can be put through to: a phone number or a SIP address, checked and shown.

Kept apart from the transfer itself (:mod:`bot.transfer`) so the settings can check a target at
start-up without importing Pipecat.
"""

from __future__ import annotations

import re

import phonenumbers

from memory.privacy.identity import mask_number

#: A SIP or SIPS address: ``sip:user@host`` with optional port and parameters.
_SIP = re.compile(r"sips?:[A-Za-z0-9._~%+\-!$&'()*,;=]+@[A-Za-z0-9.\-]+(?::\d{1,5})?(?:;[^\s<>]*)?")


def transfer_target(value: str) -> str:
    """A transfer target, normalised: E.164 for a phone number, a SIP address as given.

    Raises:
        ValueError: Neither a phone number with its country code nor a ``sip:`` address.
    """
    text = value.strip()
    if text.lower().startswith(("sip:", "sips:")):
        if not _SIP.fullmatch(text):
            raise ValueError("a SIP address looks like sip:user@host")
        return text
    return phone_number(text)


def phone_number(value: str) -> str:
    """A phone number written with its country code, as E.164.

    Raises:
        ValueError: Not a valid phone number with its country code.
    """
    try:
        number = phonenumbers.parse(value.strip(), None)
    except phonenumbers.NumberParseException as e:
        raise ValueError("give a phone number with its country code (+34...) or sip:...") from e
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def shown_target(target: str) -> str:
    """A target as records and logs may show it: a phone number masked, a SIP address as is."""
    return target if target.lower().startswith(("sip:", "sips:")) else mask_number(target)
