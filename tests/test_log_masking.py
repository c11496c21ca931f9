"""Every accepted caller-id form is masked in log lines at every level, DEBUG too."""

from __future__ import annotations

import pytest
from loguru import logger

from cli.logs import install_redaction
from memory.privacy.identity import normalize_number

#: Every form a transport may hand over, as ``normalize_number`` accepts them.
ACCEPTED = [
    "+1 415 555 0123",
    "(415) 555-0123",
    "415.555.0123",
    "1-415-555-0123",
    "14155550123",
    "4155550123",
    "+1/415/555/0123",
    "0034 600 123 456",
    "011 34 600 123 456",
    "+34 600 12 34 56",
    "+44 (0)20 7946 0018",
    "tel:+34-600-123-456",
    "tel:+1-415-555-0123;phone-context=example.com",
    "sip:+14155550123@sip.example.com;user=phone",
    "sip:4155550123@host;user=phone",
    "sip:%2B14155550123@host",
    '"Alice" <sip:+14155550123@host>;tag=a73kszlfl',
    "<sip:14155550123@host>;tag=1928301774",
]


@pytest.mark.parametrize("raw", ACCEPTED)
def test_every_accepted_caller_id_form_is_masked_in_debug_logs(raw: str) -> None:
    e164 = normalize_number(raw)
    assert e164 is not None, "the form must be one identity accepts"
    national = e164[-10:] if e164.startswith("+1") else e164[3:]
    install_redaction()
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="DEBUG")
    try:
        logger.debug("Received a call: {'From': '" + raw + "', 'x': 1}")
        logger.opt(colors=False).debug(f"webhook body from={raw}")
    finally:
        logger.remove(sink)
    assert len(lines) == 2
    for line in lines:
        digits = "".join(char for char in line if char.isdigit())
        assert national not in digits, line
        assert national[-7:] not in digits, line
