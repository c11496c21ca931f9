"""Business hours: local wall-clock time in the business's zone, closed dates, one-line errors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from bot.hours import BusinessHours
from bot.settings import BotSettings
from bot.wording import with_hours

MADRID = BusinessHours.model_validate(
    {
        "timezone": "Europe/Madrid",
        "weekly": {"mon": [["16:00", "19:00"], ["09:00", "14:00"]], "sat": [["10:00", "13:00"]]},
        "closed": ["2026-12-28"],
    }
)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(
    ("at", "open_"),
    [
        # Monday 2 March 2026: Madrid is UTC+1.
        (utc(2026, 3, 2, 7, 59), False),  # 08:59 in Madrid
        (utc(2026, 3, 2, 8, 0), True),  # 09:00
        (utc(2026, 3, 2, 12, 59), True),  # 13:59
        (utc(2026, 3, 2, 13, 0), False),  # 14:00: the lunch break
        (utc(2026, 3, 2, 15, 30), True),  # 16:30
        # Monday 30 March 2026: summer time, UTC+2.
        (utc(2026, 3, 30, 7, 30), True),  # 09:30
        (utc(2026, 3, 30, 17, 30), False),  # 19:30
        # Sunday 1 March, 23:30 UTC is already Monday 00:30 in Madrid: closed until 09:00.
        (utc(2026, 3, 1, 23, 30), False),
        # Monday 28 December is a closed date.
        (utc(2026, 12, 28, 10, 0), False),
    ],
)
def test_open_follows_the_business_s_own_clock(at: datetime, open_: bool) -> None:
    assert MADRID.is_open(at) is open_


def test_a_time_zone_boundary_changes_the_day() -> None:
    # Saturday 10:30 in Madrid is Saturday 01:30 in Los Angeles: the same instant, open.
    saturday = datetime.fromisoformat("2026-03-07T01:30:00-08:00")
    assert MADRID.is_open(saturday)
    tokyo = BusinessHours.model_validate(
        {"timezone": "Asia/Tokyo", "weekly": {"mon": [["09:00", "17:00"]]}}
    )
    # Sunday 2026-03-01 16:00 UTC is Monday 01:00 in Tokyo; 00:30 UTC Monday is 09:30 there.
    assert not tokyo.is_open(utc(2026, 3, 1, 16, 0))
    assert tokyo.is_open(utc(2026, 3, 2, 0, 30))
    assert not tokyo.is_open(utc(2026, 3, 2, 8, 0))  # 17:00 in Tokyo, Monday 08:00 in UTC


def test_the_next_opening_skips_closed_dates() -> None:
    # Saturday 26 Dec 2026 after closing: Sunday closed, Monday 28th a closed date.
    after = utc(2026, 12, 26, 13, 0)
    assert MADRID.next_opening(after) == datetime.fromisoformat("2027-01-02T10:00:00+01:00")
    assert MADRID.reopening(after) == "It opens again Saturday 2 January 2027 at 10:00."
    lunch = utc(2026, 3, 2, 13, 30)
    assert MADRID.reopening(lunch) == "It opens again today at 16:00."


def test_the_prompt_says_whether_it_is_open_now() -> None:
    template = "Before.\n{{hours}}\nAfter."
    open_note = with_hours(template, MADRID, utc(2026, 3, 2, 8, 30))
    assert "the business is OPEN, until 14:00" in open_note
    assert "Monday 09:00-14:00 and 16:00-19:00; Saturday 10:00-13:00" in open_note
    closed_note = with_hours(template, MADRID, utc(2026, 12, 20, 10, 0))
    assert "CLOSED" in closed_note and "28 December 2026" in closed_note
    assert with_hours(template, None, utc(2026, 3, 2)) == "Before.\n\nAfter."


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ('{"timezone": "Mars/Olympus", "weekly": {}}', "unknown time zone"),
        ('{"timezone": "UTC", "weekly": {"mon": [["14:00", "09:00"]]}}', "ends before"),
        (
            '{"timezone": "UTC", "weekly": {"mon": [["09:00", "14:00"], ["13:00", "15:00"]]}}',
            "overl",
        ),
        ('{"timezone": "UTC", "weekly": {"monday": [["09:00", "14:00"]]}}', "weekly"),
        ('{"timezone": "UTC", "closed": ["25/12/2026"]}', "closed"),
    ],
)
def test_bad_hours_fail_the_settings(
    monkeypatch: pytest.MonkeyPatch, value: str, complaint: str
) -> None:
    monkeypatch.setenv("RAPPORT_BUSINESS_HOURS", value)
    with pytest.raises(ValidationError, match=complaint):
        BotSettings()


def test_hours_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAPPORT_BUSINESS_HOURS", MADRID.model_dump_json())
    assert BotSettings().business_hours == MADRID


def test_transfer_targets_are_checked_and_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    targets = '{"Emergency": "+1 415 555 0199", "sales": "sip:sales@pbx.example.com"}'
    monkeypatch.setenv("RAPPORT_TRANSFER_TARGETS", targets)
    settings = BotSettings(RAPPORT_TRANSFER_TO="+34 600 111 222")
    assert settings.transfer_to == "+34600111222"
    assert settings.transfer_targets == {
        "emergency": "+14155550199",
        "sales": "sip:sales@pbx.example.com",
    }
    with pytest.raises(ValidationError, match="country code"):
        BotSettings(RAPPORT_TRANSFER_TO="600 111 222")
    monkeypatch.setenv("RAPPORT_TRANSFER_TARGETS", '{"sales": "sip:nobody"}')
    with pytest.raises(ValidationError, match="sip:user@host"):
        BotSettings()
