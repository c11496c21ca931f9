"""The scrubbing table: secrets are replaced by typed placeholders, look-alikes stay."""

from __future__ import annotations

import pytest

from memory.models import Turn
from memory.privacy.scrub import scrub, scrub_fact, scrub_turns

SECRETS = [
    # Card numbers: Luhn-valid, 13-19 digits, written or spoken.
    ("my card is 4111 1111 1111 1111 thanks", "my card is [card] thanks"),
    ("card 5500-0000-0000-0004 expires soon", "card [card] expires soon"),
    ("it's 6011111111111117.", "it's [card]."),
    ("amex 3782 822463 10005", "amex [card]"),
    (
        "four one one one one one one one one one one one one one one one",
        "[card]",
    ),
    (
        "cuatro uno uno uno, uno uno uno uno, uno uno uno uno, uno uno uno uno",
        "[card]",
    ),
    # Security codes.
    ("and the CVV is 123", "and the CVV is [security code]"),
    ("CVC: 7890", "CVC: [security code]"),
    ("the security code is four five six", "the security code is [security code]"),
    ("mi código de seguridad es 321", "mi código de seguridad es [security code]"),
    # IBANs (mod-97 valid), grouped or compact.
    ("IBAN ES91 2100 0418 4502 0005 1332 please", "IBAN [iban] please"),
    ("send it to GB82 WEST 1234 5698 7654 32", "send it to [iban]"),
    ("DE89370400440532013000", "[iban]"),
    # Passwords and PINs spoken as such, in English, Spanish and Catalan.
    ("my password is hunter2 and my user is bob", "my password is [password] and my user is bob"),
    ("password: Tr0ub4dor&3", "password: [password]"),
    ("the password's swordfish", "the password's [password]"),
    ("mi contraseña es gato azul.", "mi contraseña es [password]."),
    ("la contrasenya és patata", "la contrasenya és [password]"),
    ("PIN is 4321", "PIN is [pin]"),
    ("my pin number is 0000", "my pin number is [pin]"),
    ("mi PIN es cuatro tres dos uno", "mi PIN es [pin]"),
    ("el meu PIN és 4321", "el meu PIN és [pin]"),
    # Government ids.
    ("SSN 123-45-6789", "SSN [id]"),
    ("my social security number is 123456789", "my social security number is [id]"),
    ("DNI 12345678Z", "DNI [id]"),
    ("mi NIE es X1234567L", "mi NIE es [id]"),
    ("NI number AB 12 34 56 C", "NI number [id]"),
    ("passport number is X1234567", "passport number is [id]"),
]

LOOK_ALIKES = [
    "order number 4111 1111 1111 1112",  # 16 digits failing Luhn
    "tracking 1234567890123456",
    "my order is 12345678",
    "call me on +34 612 345 678",
    "or +1 (415) 555-0123",
    "the office is 020 7946 0958",
    "from abroad dial 0034 612 345 678",  # 13 digits, fails Luhn
    "dial 00 1 415 555 0123",  # 13 digits, Luhn-valid, but a phone number
    "+1 415 555 0123 4567",
    "415-555-0123",
    "on 12/05/2024 at 10:30",
    "delivered 2024-05-12",
    "it came to $1,250.00",
    "a quote of 1,499,999.99 euros",
    "postcode SW1A 1AA",
    "08001 Barcelona",
    "zip 94105-1234",
    "12345678A is not a valid DNI",
    "GB82 WEST 1234 5698 7654 33",  # mod-97 fails
    "ISBN 9780306406157",
    "can you pin the meeting for Monday",
    "I need a password reset",
    "I forgot my password",
    "my password is not working",
    "mi contraseña es incorrecta",
    "the pin is loose",
    "the security code was sent by SMS",
    "the CVV field is empty",
    "room 404, floor 3",
]


@pytest.mark.parametrize(("text", "expected"), SECRETS)
def test_secret_is_replaced(text: str, expected: str) -> None:
    assert scrub(text) == expected


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_look_alike_stays(text: str) -> None:
    assert scrub(text) == text


@pytest.mark.parametrize("text", [text for text, _ in SECRETS] + LOOK_ALIKES)
def test_scrub_is_idempotent(text: str) -> None:
    assert scrub(scrub(text)) == scrub(text)


def test_several_secrets_in_one_turn() -> None:
    text = (
        "Card 4111 1111 1111 1111, CVV 123, and my PIN is 9876. Order 12345678 was on 2024-05-12."
    )
    assert scrub(text) == (
        "Card [card], CVV [security code], and my PIN is [pin]. Order 12345678 was on 2024-05-12."
    )


def test_scrub_turns_copies_scrubbed_turns() -> None:
    turns = [Turn(role="user", text="PIN is 4321", call_id="c1"), Turn(role="assistant", text="Ok")]
    scrubbed = scrub_turns(turns)
    assert [turn.text for turn in scrubbed] == ["PIN is [pin]", "Ok"]
    assert scrubbed[0].call_id == "c1"
    assert turns[0].text == "PIN is 4321"


@pytest.mark.parametrize(
    ("fact", "expected"),
    [
        ("Caller prefers weekday mornings", "Caller prefers weekday mornings"),
        ("Caller's PIN is 4321", None),
        ("Caller pays with card 4111 1111 1111 1111", None),
        ("   ", None),
    ],
)
def test_scrub_fact_drops_facts_that_carried_a_secret(fact: str, expected: str | None) -> None:
    assert scrub_fact(fact) == expected
