"""Logging for the bot process: a level from settings, and no phone number in any log line.

Our own code logs masked numbers only, but Pipecat's runner logs what it receives at DEBUG
(the Daily dial-in webhook, the parsed Twilio ``start`` message, the WebRTC start body). A
loguru patcher masks anything that looks like an international number in every message, ours
and Pipecat's, before any handler sees it.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING

from loguru import logger

from memory.identity import mask_number

if TYPE_CHECKING:
    from loguru import Record

# "+1 (415) 555-0123", "+14155550123", and URL-encoded "%2B14155550123".
_NUMBER = re.compile(r"(?:\+|%2B)\d[\d\s().\-]{5,}\d", re.IGNORECASE)
_NON_DIGITS = re.compile(r"\D")


def _masked(match: re.Match[str]) -> str:
    text = match.group()
    digits = _NON_DIGITS.sub("", text[1:] if text.startswith("+") else text[3:])
    return mask_number(f"+{digits}")


def mask_numbers(text: str) -> str:
    """``text`` with every international phone number in it masked (``+1415•••0123``)."""
    return _NUMBER.sub(_masked, text)


def _redact(record: Record) -> None:
    record["message"] = mask_numbers(record["message"])


def install_redaction() -> None:
    """Mask phone numbers in every log message from now on (survives ``logger.remove()``)."""
    logger.configure(patcher=_redact)


def configure_logging(level: str) -> None:
    """Log to stderr at ``level`` (replacing the handlers set so far), numbers masked."""
    install_redaction()
    logger.remove()
    logger.add(sys.stderr, level=level.upper())
