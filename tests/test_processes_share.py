"""What the processes of one deployment share through Redis or a shared secret, not memory.

A stream token used up by one process is refused by every other on the same Redis; a dashboard
session signed by one process is accepted by another (and after a restart) because the key
comes from a setting or a key file every process reads; failed logins counted by one process
block that name on every other. The subprocess tests of the same
promises are in ``tests/test_two_bots.py``.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from redis.asyncio import Redis
from starlette.requests import Request

from bot.trust import StreamTokens, UsedTokens
from memory.errors import ConfigurationError
from web.dashboard.access import SESSION_COOKIE, DashboardSettings
from web.dashboard.throttle import MAX_ADDRESS_FAILURES, MAX_FAILURES, SharedThrottle

SECRET = b"a stream token secret shared by every process"
CALL = {
    "call_sid": "CA0123456789abcdef0123456789abcdef",
    "from_number": "+14155550123",
    "to_number": "+34600111222",
    "attestation": "TN-Validation-Passed-A",
}


def process_tokens(redis: Redis | None, key_prefix: str) -> StreamTokens:
    """The stream tokens of one bot process: its own ledger object on the shared Redis."""
    return StreamTokens(SECRET, used=UsedTokens(lambda: redis, prefix=key_prefix))


async def test_a_stream_token_used_by_one_process_is_refused_by_another(
    redis_client: Redis, key_prefix: str
) -> None:
    first, second = (
        process_tokens(redis_client, key_prefix),
        process_tokens(redis_client, key_prefix),
    )
    token = first.issue(**CALL)
    assert await second.redeem(token, **CALL)
    assert not await first.redeem(token, **CALL)
    assert not await second.redeem(token, **CALL)
    assert await first.redeem(first.issue(**CALL), **CALL)  # a fresh token still works


async def test_a_used_token_is_kept_in_redis_only_as_long_as_the_token_lives(
    redis_client: Redis, key_prefix: str
) -> None:
    tokens = StreamTokens(
        SECRET, ttl_s=30, used=UsedTokens(lambda: redis_client, prefix=key_prefix)
    )
    assert await tokens.redeem(tokens.issue(**CALL), **CALL)
    (key,) = [key async for key in redis_client.scan_iter(match=f"{key_prefix}:stream-token:*")]
    assert 0 < await redis_client.pttl(key) <= 31_000


async def test_without_redis_a_token_is_still_single_use_in_its_process() -> None:
    tokens = process_tokens(None, "unused")
    token = tokens.issue(**CALL)
    assert await tokens.redeem(token, **CALL)
    assert not await tokens.redeem(token, **CALL)


def _request(cookie: str) -> Request:
    headers = [(b"cookie", f"{SESSION_COOKIE}={cookie}".encode())]
    return Request({"type": "http", "method": "GET", "path": "/dashboard", "headers": headers})


def test_a_dashboard_session_made_by_one_process_is_valid_in_another_and_after_a_restart(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RAPPORT_DASHBOARD_PASSWORD", "a-long-dashboard-password")
    monkeypatch.setenv("RAPPORT_DASHBOARD_KEY_FILE", str(tmp_path / "keys" / "dashboard-key"))
    first = DashboardSettings().access("0.0.0.0")
    cookie = first.session_cookie("Marta")
    restarted = DashboardSettings().access("0.0.0.0")
    session = restarted.session(_request(cookie))
    assert session is not None and session.user == "Marta"
    assert restarted.csrf_valid(session, first.csrf_token(session))
    key_file = tmp_path / "keys" / "dashboard-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # Another key file is another deployment: its sessions are not accepted here.
    monkeypatch.setenv("RAPPORT_DASHBOARD_KEY_FILE", str(tmp_path / "other-key"))
    assert DashboardSettings().access("0.0.0.0").session(_request(cookie)) is None


def test_the_session_key_setting_wins_over_the_key_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RAPPORT_DASHBOARD_KEY_FILE", str(tmp_path / "dashboard-key"))
    monkeypatch.setenv("RAPPORT_DASHBOARD_SESSION_KEY", "k" * 40)
    assert DashboardSettings().signing_key() == b"k" * 40
    assert not (tmp_path / "dashboard-key").exists()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RAPPORT_DASHBOARD_SESSION_KEY", "too-short"),
        ("RAPPORT_DASHBOARD_KEY_FILE", "/proc/no-such-folder/dashboard-key"),
    ],
)
def test_an_unusable_session_key_is_a_configuration_error_naming_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable):
        DashboardSettings().signing_key()


async def test_failed_logins_on_one_process_block_that_name_on_another(
    redis_client: Redis, key_prefix: str
) -> None:
    first, second = (SharedThrottle(lambda: redis_client, prefix=key_prefix) for _ in range(2))
    for _ in range(MAX_FAILURES):
        assert not await second.blocked("203.0.113.7", "Marta")
        await first.failed("203.0.113.7", "Marta")
    assert await second.blocked("203.0.113.7", "marta")  # names are matched without case
    assert not await second.blocked("203.0.113.7", "Jordi")  # a colleague on the same address
    assert not await second.blocked("198.51.100.2", "Marta")
    keys = [key.decode() async for key in redis_client.scan_iter(match=f"{key_prefix}:dash*")]
    assert keys and not [key for key in keys if "203.0.113.7" in key or "Marta" in key]
    await second.succeeded("203.0.113.7", "Marta")
    assert not await first.blocked("203.0.113.7", "Marta")


async def test_many_names_from_one_address_block_the_address_everywhere(
    redis_client: Redis, key_prefix: str
) -> None:
    first, second = (SharedThrottle(lambda: redis_client, prefix=key_prefix) for _ in range(2))
    for attempt in range(MAX_ADDRESS_FAILURES):
        await (first if attempt % 2 else second).failed("203.0.113.9", f"name-{attempt}")
    assert await first.blocked("203.0.113.9", "a-new-name")
    assert await second.blocked("203.0.113.9", "another-new-name")


async def test_without_redis_failed_logins_are_counted_in_the_process() -> None:
    throttle = SharedThrottle(lambda: None, prefix="unused")
    for _ in range(MAX_FAILURES):
        await throttle.failed("203.0.113.7", "Marta")
    assert await throttle.blocked("203.0.113.7", "Marta")
