"""Caller identity: normalisation, masking, keys and the pepper."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from loguru import logger
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from memory.errors import ConfigurationError, InvalidIdentityError
from memory.privacy.identity import (
    PEPPER_FILENAME,
    CallerIdentity,
    caller_key,
    default_pepper_file,
    identify,
    load_pepper,
    mask_number,
    normalize_number,
)
from tests.support.values import PEPPER_BYTES as PEPPER

SF = "+14155550123"
MADRID_MOBILE = "+34600123456"
LONDON = "+442079460018"


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        # US national and international formats
        ("+1 415 555 0123", "US", SF),
        ("(415) 555-0123", "US", SF),
        ("415.555.0123", "US", SF),
        ("1-415-555-0123", "US", SF),
        ("14155550123", "US", SF),
        ("  +1/415/555/0123 ", "US", SF),
        ("+1 (415) 555-0123", "GB", SF),
        ("４１５５５５０１２３", "US", SF),  # full-width digits
        # international prefixes: 00, and the default region's own (011 in the US)
        ("0034 600 123 456", "US", MADRID_MOBILE),
        ("011 34 600 123 456", "US", MADRID_MOBILE),
        ("0044 20 7946 0018", "ES", LONDON),
        ("+34 600 12 34 56", "US", MADRID_MOBILE),
        ("+44 (0)20 7946 0018", "US", LONDON),
        # national formats in other regions
        ("600 123 456", "ES", MADRID_MOBILE),
        ("020 7946 0018", "GB", LONDON),
        ("030 901820", "DE", "+4930901820"),
        ("01 23 45 67 89", "FR", "+33123456789"),
        ("(02) 9876 5432", "AU", "+61298765432"),
        ("+81 3-1234-5678", "US", "+81312345678"),
        ("+91 98765 43210", "US", "+919876543210"),
        # tel: and sip: URIs
        ("tel:+34-600-123-456", "US", MADRID_MOBILE),
        ("tel:+1-415-555-0123;phone-context=example.com", "US", SF),
        ("sip:+14155550123@sip.example.com;user=phone", "US", SF),
        ("SIP:+14155550123@host", "US", SF),
        ("sips:+442079460018@carrier.example", "US", LONDON),
        ("sip:%2B14155550123@host", "US", SF),
        ("sip:+14155550123:secret@host;user=phone", "US", SF),
        ("<sip:+14155550123@host>", "US", SF),
        ('"Alice" <sip:+14155550123@host;transport=tls>', "US", SF),
        ('"Alice" <sip:+14155550123@host>;tag=a73kszlfl', "US", SF),
        ("<sip:4155550123@host;user=phone>;tag=1928301774;epid=5", "US", SF),
        # anonymous: missing, withheld, garbage, impossible, too long
        (None, "US", None),
        ("", "US", None),
        ("   ", "US", None),
        ("anonymous", "US", None),
        ("Anonymous", "US", None),
        ("RESTRICTED", "US", None),
        ("unknown", "US", None),
        ("private", "US", None),
        ("withheld", "US", None),
        ("unavailable", "US", None),
        ("blocked", "US", None),
        ("sip:anonymous@anonymous.invalid", "US", None),
        ("sip:Restricted@host;user=phone", "US", None),
        ("+266696687", "US", None),  # Twilio's keypad spelling of ANONYMOUS
        ("+7378742833", "US", None),  # ... and of RESTRICTED
        ("client:alice", "US", None),
        ("sip:alice@example.com", "US", None),
        ("not a number", "US", None),
        ("1-800-FLOWERS", "US", None),
        ("415 555 0123 ext. 12", "US", None),
        ("☎️ 415 555 0123", "US", None),
        ("📞", "US", None),
        ("+", "US", None),
        ("00", "US", None),
        ("---", "US", None),
        ("12345", "US", None),
        ("+1 555 555 5555", "US", None),
        ("415 555 0123", "GB", None),
        ("+1 415 555 0123" + "0" * 60, "US", None),
        (" " * 60 + SF, "US", None),
        ("4" * 65, "US", None),
    ],
)
def test_normalize_number(raw: str | None, region: str, expected: str | None) -> None:
    assert normalize_number(raw, default_region=region) == expected


EXAMPLE_NUMBERS = [
    example
    for region in sorted(phonenumbers.SUPPORTED_REGIONS)
    for kind in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE)
    if (example := phonenumbers.example_number_for_type(region, kind)) is not None
]


@st.composite
def valid_numbers(draw: st.DrawFn) -> phonenumbers.PhoneNumber:
    """A valid number near the example fixed-line or mobile number of a random region."""
    example = draw(st.sampled_from(EXAMPLE_NUMBERS))
    # Via E.164, which keeps the leading zero some national numbers have (e.g. in Gabon).
    e164 = phonenumbers.format_number(example, PhoneNumberFormat.E164)
    suffix = draw(st.text(alphabet="0123456789", min_size=2, max_size=2))
    number = phonenumbers.parse(e164[:-2] + suffix)
    assume(phonenumbers.is_valid_number(number))
    return number


def spellings(number: phonenumbers.PhoneNumber) -> list[tuple[str, str]]:
    """The same number written the ways transports report it, each with its default region."""
    region = phonenumbers.region_code_for_number(number)
    assert region is not None
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    return [
        (e164, "US"),
        (phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL), "US"),
        (phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL), region),
        (phonenumbers.format_number(number, PhoneNumberFormat.RFC3966), "US"),
        ("00" + e164[1:], "ES"),
        (f"sip:{e164}@carrier.example;user=phone", "US"),
    ]


@given(valid_numbers())
def test_normalize_is_idempotent(number: phonenumbers.PhoneNumber) -> None:
    e164 = normalize_number(phonenumbers.format_number(number, PhoneNumberFormat.E164))
    assert e164 is not None
    assert normalize_number(e164) == e164
    assert normalize_number(e164, default_region="JP") == e164


@given(st.text(max_size=80))
def test_normalize_any_text_is_e164_or_anonymous(raw: str) -> None:
    e164 = normalize_number(raw)
    if e164 is not None:
        assert e164.startswith("+") and e164[1:].isdigit()
        assert normalize_number(e164) == e164


@given(valid_numbers())
def test_one_number_in_every_spelling_gives_one_key(number: phonenumbers.PhoneNumber) -> None:
    keys = {
        identify(raw, agent_id="acme", pepper=PEPPER, default_region=region)
        for raw, region in spellings(number)
    }
    assert len(keys) == 1
    assert None not in keys


@given(valid_numbers(), st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True))
def test_different_agents_give_different_keys(number: phonenumbers.PhoneNumber, agent: str) -> None:
    assume(agent != "acme")
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    assert caller_key(PEPPER, agent, e164) != caller_key(PEPPER, "acme", e164)


def test_agent_and_number_boundary_cannot_collide() -> None:
    assert caller_key(PEPPER, "acme1", "+4155550123") != caller_key(PEPPER, "acme", SF)


@given(valid_numbers(), st.binary(min_size=16, max_size=64))
def test_different_peppers_give_different_keys(
    number: phonenumbers.PhoneNumber, pepper: bytes
) -> None:
    assume(pepper != PEPPER)
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    assert caller_key(pepper, "acme", e164) != caller_key(PEPPER, "acme", e164)


@given(valid_numbers())
def test_key_and_identity_never_contain_the_number(number: phonenumbers.PhoneNumber) -> None:
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    identity = identify(e164, agent_id="acme", pepper=PEPPER)
    assert identity is not None
    assert identity.key.startswith("v1.")
    assert len(identity.key) == len("v1.") + 64
    for text in (identity.key, identity.hash_tag, repr(identity)):
        assert e164[1:] not in text
        assert str(number.national_number) not in text


@given(valid_numbers())
def test_mask_never_contains_the_number(number: phonenumbers.PhoneNumber) -> None:
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    masked = mask_number(e164)
    assert "•••" in masked
    assert str(number.national_number) not in masked.replace("•", "")
    assert e164 not in masked


@pytest.mark.parametrize(
    ("e164", "masked"),
    [
        (SF, "+1•••23"),
        (MADRID_MOBILE, "+34•••56"),
        ("+4930901820", "+49•••20"),
        ("+6834002", "+683•••"),
        ("4155550123", "•••"),
        ("garbage", "•••"),
    ],
)
def test_mask_number(e164: str, masked: str) -> None:
    assert mask_number(e164) == masked


def test_identify_builds_identity_without_raw_number() -> None:
    identity = identify("(415) 555-0123", agent_id="acme.sales-1", pepper=PEPPER)
    assert identity == CallerIdentity(
        agent_id="acme.sales-1", key=caller_key(PEPPER, "acme.sales-1", SF), masked="+1•••23"
    )
    assert identity.hash_tag == f"acme.sales-1:{identity.key}"
    assert not hasattr(identity, "__dict__")
    with pytest.raises(AttributeError):
        identity.key = "v1.other"  # type: ignore[misc]


def test_identify_anonymous_is_none() -> None:
    assert identify("anonymous", agent_id="acme", pepper=PEPPER) is None
    assert identify(None, agent_id="acme", pepper=PEPPER) is None


@pytest.mark.parametrize("agent_id", ["", "a" * 65, "acme sales", "acme:1", "acme\x1f", "é"])
def test_invalid_agent_id_is_rejected(agent_id: str) -> None:
    with pytest.raises(InvalidIdentityError):
        identify(SF, agent_id=agent_id, pepper=PEPPER)
    with pytest.raises(InvalidIdentityError):
        identify(None, agent_id=agent_id, pepper=PEPPER)


def test_caller_key_rejects_non_e164() -> None:
    with pytest.raises(InvalidIdentityError):
        caller_key(PEPPER, "acme", "4155550123")


def test_pepper_is_generated_once_outside_the_data_folder(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_pepper(redis_url=None, pepper=None, data_dir=data_dir)
    second = load_pepper(redis_url=None, pepper=None, data_dir=data_dir)
    assert first == second
    assert len(first) == 64
    path = default_pepper_file()
    assert path == Path(os.environ["XDG_CONFIG_HOME"]) / "rapport" / PEPPER_FILENAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not data_dir.exists() or list(data_dir.iterdir()) == []
    # The file's text works as RAPPORT_PEPPER, so moving to an external Redis keeps every key.
    assert load_pepper(redis_url="redis://x", pepper=path.read_text(), data_dir=tmp_path) == first


def test_pepper_file_setting_is_honoured(tmp_path: Path) -> None:
    one = load_pepper(redis_url=None, pepper=None, data_dir=tmp_path, pepper_file=tmp_path / "a")
    two = load_pepper(redis_url=None, pepper=None, data_dir=tmp_path, pepper_file=tmp_path / "b")
    assert one != two
    assert (tmp_path / "a").read_text().encode() == one


def test_an_old_layout_pepper_is_moved_and_keys_stay_the_same(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / PEPPER_FILENAME).write_text("old-layout-pepper-0123456789abcdef")
    before = caller_key(b"old-layout-pepper-0123456789abcdef", "acme", SF)
    messages: list[str] = []
    sink = logger.add(messages.append, level="INFO", format="{message}")
    try:
        pepper = load_pepper(redis_url=None, pepper=None, data_dir=data_dir)
        again = load_pepper(redis_url=None, pepper=None, data_dir=data_dir)
    finally:
        logger.remove(sink)
    assert caller_key(pepper, "acme", SF) == before == caller_key(again, "acme", SF)
    assert not (data_dir / PEPPER_FILENAME).exists()
    assert stat.S_IMODE(default_pepper_file().stat().st_mode) == 0o600
    assert sum("Moved the generated pepper" in m for m in messages) == 1


def test_two_different_peppers_are_refused(tmp_path: Path) -> None:
    load_pepper(redis_url=None, pepper=None, data_dir=tmp_path)
    (tmp_path / PEPPER_FILENAME).write_text("another-pepper-0123456789abcdef")
    with pytest.raises(ConfigurationError, match="differs"):
        load_pepper(redis_url=None, pepper=None, data_dir=tmp_path)


def test_generated_pepper_logs_a_warning(tmp_path: Path) -> None:
    from loguru import logger

    messages: list[str] = []
    sink = logger.add(messages.append, level="WARNING")
    try:
        load_pepper(redis_url=None, pepper=None, data_dir=tmp_path)
    finally:
        logger.remove(sink)
    assert any("generated pepper" in message for message in messages)


def test_explicit_pepper_wins(tmp_path: Path) -> None:
    pepper = "0123456789abcdef"
    assert load_pepper(redis_url=None, pepper=pepper, data_dir=tmp_path) == pepper.encode()
    assert load_pepper(redis_url="redis://h", pepper=pepper, data_dir=tmp_path) == pepper.encode()
    assert not (tmp_path / PEPPER_FILENAME).exists()


def test_redis_url_without_pepper_raises(tmp_path: Path) -> None:
    for missing in (None, "", "  "):
        with pytest.raises(ConfigurationError, match="RAPPORT_PEPPER"):
            load_pepper(redis_url="redis://localhost:6379", pepper=missing, data_dir=tmp_path)
    assert not (tmp_path / PEPPER_FILENAME).exists()


def test_short_pepper_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="16"):
        load_pepper(redis_url=None, pepper="too-short", data_dir=tmp_path)


def test_truncated_pepper_file_raises(tmp_path: Path) -> None:
    (tmp_path / PEPPER_FILENAME).write_text("abc\n")
    with pytest.raises(ConfigurationError):
        load_pepper(redis_url=None, pepper=None, data_dir=tmp_path)
