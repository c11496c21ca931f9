"""Logging for every Rapport process: a level from settings, and no phone number in any line.

Every process entry (the bot, the worker, the dashboard, every command: :func:`cli.main.run`)
calls :func:`configure_logging` with ``RAPPORT_LOG_LEVEL`` before it does anything else.

Our own code logs masked numbers only, but Pipecat's runner logs what it receives at DEBUG
(the Daily dial-in webhook, the parsed Twilio ``start`` message, the WebRTC start body). A
loguru patcher masks anything that looks like a phone number, in any format (international,
national, with separators, inside SIP URIs), in every message at every level, ours and
Pipecat's, before any handler sees it.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING

import phonenumbers
from loguru import logger
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from memory.privacy.identity import mask_number
from memory.settings import invalid_settings

if TYPE_CHECKING:
    from loguru import Record

# "+1 (415) 555-0123", "+14155550123", "0034 600 123 456" and URL-encoded "%2B14155550123".
_NUMBER = re.compile(r"(?:\+|%2B|\b00(?=[1-9]))\d[\d\s().\-]{5,}\d", re.IGNORECASE)
_NON_DIGITS = re.compile(r"\D")
# Seven digits or more, separators between them allowed: text worth the matcher's time.
_DIGIT_RUN = re.compile(r"\d(?:[\s().\-/]{0,3}\d){6,}")
_MASK = "•••"
# The user part of a SIP or tel URI, when it is digits: "sip:4155550123@host".
_SIP_USER = re.compile(r"((?:sips?|tel):)[\d\-.()]{6,}(?=[@;>'\"\s,]|$)", re.IGNORECASE)


def _masked(match: re.Match[str]) -> str:
    text = match.group()
    prefix = 1 if text.startswith("+") else 2 if text.startswith("00") else 3
    digits = _NON_DIGITS.sub("", text[prefix:])
    return mask_number(f"+{digits}")


def mask_numbers(text: str, *, region: str = "US") -> str:
    """``text`` with every phone number in it masked, in any format.

    International numbers keep their masked form (country code and last two digits); valid
    national numbers, numbers with separators (found with ``phonenumbers``' matcher) and the
    user part of SIP and tel URIs are masked whole. Dates, ids and durations are left alone.
    """
    text = _SIP_USER.sub(lambda match: match.group(1) + _MASK, _NUMBER.sub(_masked, text))
    if not _DIGIT_RUN.search(text):
        return text
    matcher = phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID)
    for match in reversed(list(matcher)):
        text = text[: match.start] + _MASK + text[match.end :]
    return text


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


#: The levels ``RAPPORT_LOG_LEVEL`` takes (loguru's).
LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


class LogSettings(BaseSettings):
    """How much every Rapport process logs."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    #: DEBUG shows Pipecat's own logs, which quote prompts and transcripts: development only.
    level: str = Field(default="INFO", alias="RAPPORT_LOG_LEVEL")

    @field_validator("level")
    @classmethod
    def _known_level(cls, level: str) -> str:
        if level.strip().upper() not in LEVELS:
            raise ValueError(f"must be one of {', '.join(LEVELS)}")
        return level.strip().upper()


def log_level() -> str:
    """``RAPPORT_LOG_LEVEL``, checked.

    Raises:
        ConfigurationError: Not a level, named in one line.
    """
    try:
        return LogSettings().level
    except ValidationError as e:
        raise invalid_settings(e) from None
