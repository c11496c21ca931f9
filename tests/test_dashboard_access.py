"""Who may log in to the dashboard, and in which time zone it shows times (no browser here).

The login route itself, in a real browser, is in ``test_dashboard.py``.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from memory.settings import invalid_settings
from web.dashboard import DashboardSettings
from web.dashboard.access import DashboardAccess
from web.dashboard.throttle import MAX_ADDRESS_FAILURES, MAX_FAILURES, InProcessThrottle

OFFICE = "203.0.113.7"
PASSWORD = "correct horse battery staple"


async def test_failures_block_that_name_from_that_address_only() -> None:
    access = DashboardAccess(password=PASSWORD, key=secrets.token_bytes(32))
    for _ in range(MAX_FAILURES):
        assert not await access.throttle.blocked(OFFICE, "Marta")
        assert not await access.check_password(OFFICE, "Marta", "wrong")
    assert await access.throttle.blocked(OFFICE, "Marta")
    assert await access.throttle.blocked(OFFICE, "MARTA")  # names as typed, case aside
    assert not await access.throttle.blocked(OFFICE, "Jordi")
    assert not await access.throttle.blocked("198.51.100.1", "Marta")


async def test_the_right_password_clears_the_name_s_failures() -> None:
    access = DashboardAccess(password=PASSWORD, key=secrets.token_bytes(32))
    for _ in range(MAX_FAILURES - 1):
        await access.check_password(OFFICE, "Marta", "wrong")
    assert await access.check_password(OFFICE, "Marta", PASSWORD)
    await access.check_password(OFFICE, "Marta", "wrong")
    assert not await access.throttle.blocked(OFFICE, "Marta")


async def test_an_address_trying_many_names_is_blocked_for_every_name() -> None:
    throttle = InProcessThrottle()
    for attempt in range(MAX_ADDRESS_FAILURES):
        await throttle.failed(OFFICE, f"name-{attempt}")
    assert await throttle.blocked(OFFICE, "someone-new")
    assert not await throttle.blocked("198.51.100.1", "someone-new")


def test_the_business_hours_time_zone_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("RAPPORT_TIMEZONE", "America/New_York")
    assert DashboardSettings().zone() == ZoneInfo("America/New_York")
    hours = {"timezone": "Europe/Madrid", "weekly": {"mon": [["09:00", "14:00"]]}}
    monkeypatch.setenv("RAPPORT_BUSINESS_HOURS", json.dumps(hours))
    assert DashboardSettings().zone() == ZoneInfo("Europe/Madrid")


def test_without_a_setting_times_are_utc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAPPORT_TIMEZONE", raising=False)
    monkeypatch.delenv("RAPPORT_BUSINESS_HOURS", raising=False)
    assert DashboardSettings().zone() == ZoneInfo("UTC")


def test_an_unknown_time_zone_is_named_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAPPORT_TIMEZONE", "Mars/Olympus_Mons")
    with pytest.raises(ValidationError) as refused:
        DashboardSettings()
    assert "RAPPORT_TIMEZONE" in str(invalid_settings(refused.value))
