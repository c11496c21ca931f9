"""Calling callers back: the number kept sealed, forgotten with the rest, and Twilio's calls.

Twilio is the local fake of its REST API (``tests/fakes/twilio_api.py``) reached through the
real ``twilio`` SDK; Redis is the suite's. Every call here goes through the bot's own call
assembly (``line``), so the number is kept by the recorder as in production.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import phonenumbers
import pytest
from loguru import logger
from redis.asyncio import Redis

from bot.callback import ANSWER_PATH, STATUS_PATH, CallbackDesk, CallbackError, CallbackPlacer
from bot.hours import BusinessHours
from cli.main import command_parser
from memory.errors import ConfigurationError
from memory.models import CallAnalysis, CallTrust
from memory.privacy.numbers import NumberVault, default_number_key_file, load_number_vault
from memory.runtime import MemoryAccess, open_memory
from memory.settings import MemorySettings
from memory.store.audit import AuditAction, AuditLog
from memory.store.callbacks import CallbackStatus, StaffPhones
from memory.store.keys import CallRef
from memory.store.queue import AnalysisQueue
from tests.fakes.anthropic_server import Reply
from tests.fakes.twilio_api import FakeTwilioAPI
from tests.support.call_harness import ANA, Line, caller_of, runtime_of
from tests.support.polling import eventually
from tests.support.stored import keys_holding
from tests.support.values import PEPPER

ANA_E164 = "+14155550123"
STAFF = "+34 600 111 333"
STAFF_E164 = "+34600111333"
BUSINESS = "+34930001122"
ACCOUNT_SID, AUTH_TOKEN = "AC00112233445566778899aabbccddeeff", "callback-auth-token"
PUBLIC_HOST = "voice.example.test"


def digit_forms(e164: str) -> set[str]:
    """Ways a number can be written without separators: E.164 digits and the national number."""
    national = str(phonenumbers.parse(e164).national_number)
    return {e164.lstrip("+"), national}


def business_twilio() -> FakeTwilioAPI:
    """Twilio's REST API for the business's account (serving while ``async with`` lasts)."""
    return FakeTwilioAPI(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, numbers={BUSINESS})


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilioAPI]:
    async with business_twilio() as server:
        yield server


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """Every log line written while the test runs."""
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="DEBUG")
    yield lines
    logger.remove(sink)


def desk_of(line: Line, twilio: FakeTwilioAPI | None = None, **extra: Any) -> CallbackDesk:
    twilio_settings = (
        {
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_API_BASE_URL": twilio.base_url,
            "RAPPORT_CALLBACK_FROM": BUSINESS,
        }
        if twilio is not None
        else {}
    )
    settings = line.settings(**twilio_settings, **extra)
    settings = settings.model_copy(update={"business_name": "Acme Plumbing"})
    return CallbackDesk(runtime=runtime_of(line), agent_id="bakery", settings=settings)


async def ana_calls(line: Line, call_id: str = "call-1", **extra: Any) -> None:
    """Ana calls and says a few words (the bot's call assembly records it)."""
    async with line.call(ANA, call_id, **extra) as call:
        line.fake.script(Reply.text("Sorry to hear that."))
        await call.say("My kitchen pipe burst.", replies=1)
        await call.end()


async def test_a_call_keeps_the_callers_number_sealed_and_it_opens_for_that_caller_only(
    line: Line, key_prefix: str
) -> None:
    await ana_calls(line)
    runtime = runtime_of(line)
    ana = caller_of(line, ANA)
    sealed = await runtime.store.sealed_number(ana)
    assert sealed is not None and ANA_E164.encode() not in sealed
    assert await runtime.callback_number(ana) == ANA_E164
    assert await keys_holding(runtime.redis, key_prefix, tuple(digit_forms(ANA_E164))) == set()
    # Bound to its caller: under another caller's keys it does not open.
    assert runtime.numbers is not None
    other = caller_of(line, "+14155550188")
    assert runtime.numbers.open(sealed, bound_to=other.hash_tag) is None
    # Never in an export.
    export = str(await runtime.store.export(ana))
    assert not any(form in export for form in digit_forms(ANA_E164))
    assert "contact" not in export and "number" not in (await runtime.store.export(ana))


async def test_forget_erases_the_number_and_a_call_begun_before_it_cannot_bring_it_back(
    line: Line, key_prefix: str
) -> None:
    runtime = runtime_of(line)
    ana = caller_of(line, ANA)
    async with line.call(ANA, "call-1") as call:
        line.fake.script(Reply.text("Sorry to hear that."))
        await call.say("My kitchen pipe burst.", replies=1)
        await eventually(lambda: runtime.store.sealed_number(ana))  # with the first turn
        result = await runtime.store.forget(ana)
        assert result["rewrite_by"] > 0  # the erasure reaches the disk in time
        assert await runtime.store.sealed_number(ana) is None
        line.fake.script(Reply.text("Anything else?"))
        await call.say("Are you there?", replies=1)
        await call.end()
    assert await runtime.store.sealed_number(ana) is None
    assert await runtime.callback_number(ana) is None
    assert await runtime.redis.exists(runtime.store.key_for(ana, "contact")) == 0
    # A new call after the forget is the caller's choice to be remembered again.
    await ana_calls(line, "call-2")
    assert await runtime.callback_number(ana) == ANA_E164


async def test_anonymous_and_unserved_callers_keep_no_number(line: Line, key_prefix: str) -> None:
    async with line.call(None, "anonymous-call") as call:
        line.fake.script(Reply.text("Hello!"))
        await call.say("Hi, my number is withheld.", replies=1)
        await call.end()
    await ana_calls(line, "unverified-call", trust=CallTrust.UNVERIFIED)
    runtime = runtime_of(line)
    assert await runtime.store.sealed_number(caller_of(line, ANA)) is None
    contacts = [key async for key in runtime.redis.scan_iter(match=f"{key_prefix}:*:contact")]
    assert contacts == []


async def test_with_numbers_off_none_is_kept_and_nobody_can_be_called_back(
    redis_url: str, key_prefix: str, line: Line, twilio: FakeTwilioAPI
) -> None:
    settings = MemorySettings(
        REDIS_URL=redis_url,
        RAPPORT_PEPPER=PEPPER,
        RAPPORT_KEY_PREFIX=key_prefix,
        RAPPORT_CALLBACK_NUMBERS="false",
    )
    runtime = await open_memory(settings)
    try:
        assert runtime.numbers is None
        assert line.memory is not None
        line.memory = MemoryAccess(runtime=runtime, queue=line.memory.queue)
        await ana_calls(line)
        ana = caller_of(line, ANA)
        assert await runtime.store.sealed_number(ana) is None
        desk = desk_of(line, twilio)
        assert not desk.enabled
        with pytest.raises(CallbackError, match="RAPPORT_CALLBACK_NUMBERS"):
            await desk.bridge(ana, staff_phone=STAFF_E164)
        assert twilio.created == []
    finally:
        await runtime.aclose()


async def test_a_number_sealed_under_another_key_says_which_setting_to_share(
    line: Line, twilio: FakeTwilioAPI
) -> None:
    await ana_calls(line)
    runtime = runtime_of(line)
    runtime.numbers = NumberVault([bytes(32)])  # another host's key file
    with pytest.raises(CallbackError, match="RAPPORT_NUMBER_KEY_FILE"):
        await desk_of(line, twilio).bridge(caller_of(line, ANA), staff_phone=STAFF_E164)
    assert twilio.created == []


def test_the_number_key_file_is_generated_apart_from_the_data_and_rotates(tmp_path: Path) -> None:
    default = default_number_key_file()
    assert default.parent == Path(os.environ["XDG_CONFIG_HOME"]) / "rapport"
    vault = load_number_vault()
    assert default.stat().st_mode & 0o777 == 0o600
    sealed = vault.seal(ANA_E164, bound_to="bakery:v1.x")
    assert vault.open(sealed, bound_to="bakery:v1.x") == ANA_E164
    old_key = default.read_text().strip()
    new_key = "ab" * 32
    # Rotation: the new key first seals, the old one still opens.
    default.write_text(f"{new_key}\n{old_key}  # retired 2026-12\n")
    rotated = load_number_vault()
    assert rotated.open(sealed, bound_to="bakery:v1.x") == ANA_E164
    resealed = rotated.seal(ANA_E164, bound_to="bakery:v1.x")
    default.write_text(f"{new_key}\n")
    only_new = load_number_vault()
    assert only_new.open(resealed, bound_to="bakery:v1.x") == ANA_E164
    assert only_new.open(sealed, bound_to="bakery:v1.x") is None
    assert only_new.open(b"not sealed", bound_to="bakery:v1.x") is None
    tampered = resealed[:-1] + bytes([resealed[-1] ^ 1])
    assert only_new.open(tampered, bound_to="bakery:v1.x") is None


async def test_after_rotating_the_key_reseal_numbers_lets_the_old_key_go(
    line: Line, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    await ana_calls(line)
    runtime = runtime_of(line)
    staff = desk_of(line).staff_phones
    assert staff is not None
    await staff.set("bakery", "Marta", STAFF_E164)
    path = default_number_key_file()
    old_key, new_key = path.read_text().strip(), "cd" * 32
    path.write_text(f"{new_key}\n{old_key}\n")
    command_line_of(line, monkeypatch)
    args = command_parser().parse_args(["memory", "reseal-numbers"])
    capsys.readouterr()
    assert await args.handler(args) == 0
    assert "Sealed 2 kept numbers" in capsys.readouterr().out
    path.write_text(f"{new_key}\n")  # the old key retired
    only_new = load_number_vault()
    sealed = await runtime.store.sealed_number(caller_of(line, ANA))
    assert sealed is not None
    assert only_new.open(sealed, bound_to=caller_of(line, ANA).hash_tag) == ANA_E164
    prefix = runtime.settings.key_prefix
    assert (
        await StaffPhones(runtime.redis, numbers=only_new, prefix=prefix).get("bakery", "Marta")
        == STAFF_E164
    )


@pytest.mark.parametrize("text", ["not hex at all\n", "abcd\n", "# only a comment\n"])
def test_a_bad_number_key_file_is_one_configuration_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "number_key"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match="RAPPORT_NUMBER_KEY_FILE") as error:
        load_number_vault(path)
    assert "\n" not in str(error.value)


def test_a_vault_needs_keys_of_the_right_size() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        NumberVault([b"short"])


async def test_call_back_rings_the_staff_phone_then_dials_the_caller_from_the_business(
    line: Line, twilio: FakeTwilioAPI, logged: list[str]
) -> None:
    await ana_calls(line)
    desk = desk_of(line, twilio)
    sid = await desk.bridge(caller_of(line, ANA), staff_phone=STAFF_E164)
    (created,) = twilio.created
    assert created.sid == sid and created.basic_auth == (ACCOUNT_SID, AUTH_TOKEN)
    assert created.form["To"] == STAFF_E164 and created.form["From"] == BUSINESS
    response = ElementTree.fromstring(created.form["Twiml"])
    dial = response.find("Dial")
    assert dial is not None and dial.get("callerId") == BUSINESS
    assert dial.findtext("Number") == ANA_E164
    assert response.findtext("Say")  # the staff member hears who they are being put through to
    assert not [line for line in logged for form in digit_forms(ANA_E164) if form in line]


@pytest.mark.parametrize(
    ("account", "expected"),
    [
        ({"callback_from": "+34930009999"}, "RAPPORT_CALLBACK_FROM is not a number"),
        ({"twilio_auth_token": "wrong"}, "Twilio refused the credentials"),
        ({"callback_from": None}, "Calling back needs RAPPORT_CALLBACK_FROM"),
    ],
)
async def test_a_call_back_twilio_refuses_says_why_without_the_number(
    line: Line,
    twilio: FakeTwilioAPI,
    logged: list[str],
    account: dict[str, str | None],
    expected: str,
) -> None:
    await ana_calls(line)
    desk = desk_of(line, twilio)
    desk.settings = desk.settings.model_copy(update=account)
    with pytest.raises(CallbackError, match=expected) as error:
        await desk.bridge(caller_of(line, ANA), staff_phone=STAFF_E164)
    assert not any(form in str(error.value) for form in digit_forms(ANA_E164))
    assert twilio.created == []
    assert not [line for line in logged for form in digit_forms(ANA_E164) if form in line]


def closed_today() -> BusinessHours:
    """Open every day, all day, except today (UTC): closed now, open again tomorrow."""
    today = datetime.now(UTC).date()
    every_day = {day: [["00:00", "23:59"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat")}
    return BusinessHours.model_validate(
        {"timezone": "UTC", "weekly": every_day | {"sun": [["00:00", "23:59"]]}, "closed": [today]}
    )


async def analysed_ana(line: Line, call_id: str = "call-1") -> None:
    await ana_calls(line, call_id)
    runtime = runtime_of(line)
    ana = caller_of(line, ANA)
    await runtime.store.set_name(ana, "Ana")
    record = await runtime.store.get_call(ana, call_id)
    assert record is not None
    analysis = CallAnalysis(
        summary="Caller's kitchen pipe burst.",
        urgency=5,
        action="call_back",
        sentiment="frustrated",
        language="en",
    )
    assert await runtime.store.record_call(ana, record.model_copy(update={"analysis": analysis}))


async def test_rapport_calls_back_outside_hours_at_the_next_opening_only(
    line: Line, twilio: FakeTwilioAPI
) -> None:
    await analysed_ana(line)
    hours = closed_today()
    desk = desk_of(line, twilio)
    desk.settings = desk.settings.model_copy(update={"business_hours": hours})
    ana = caller_of(line, ANA)
    callback = await desk.request_agent_callback(ana, "call-1", by="Marta", reason="the burst pipe")
    assert callback.opening == "Hi Ana, this is Acme Plumbing calling back about the burst pipe."
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    assert (
        callback.due_at
        == datetime(tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=UTC).timestamp()
    )
    placer = CallbackPlacer(desk, public_host=PUBLIC_HOST)
    assert await placer.place_due() == 0
    assert twilio.created == []
    # Still queued, due at the opening.
    due = await desk.agent_callbacks.due("bakery", at=callback.due_at)
    assert [ref.call_id for ref in due] == ["call-1"]


async def test_rapport_calls_back_within_hours_and_a_failed_attempt_is_kept(
    line: Line, twilio: FakeTwilioAPI, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    await analysed_ana(line)
    await analysed_ana(line, "call-2")
    desk = desk_of(line, twilio)
    ana = caller_of(line, ANA)
    await desk.request_agent_callback(ana, "call-1", by="Marta", reason="")
    placer = CallbackPlacer(desk, public_host=PUBLIC_HOST)
    assert await placer.place_due() == 1
    (created,) = twilio.created
    assert created.form["To"] == ANA_E164 and created.form["From"] == BUSINESS
    assert created.form["Url"].startswith(f"https://{PUBLIC_HOST}{ANSWER_PATH}?")
    assert created.form["StatusCallback"].startswith(f"https://{PUBLIC_HOST}{STATUS_PATH}?")
    assert "call=call-1" in created.form["Url"] and ANA_E164[1:] not in created.form["Url"]
    placed = await desk.agent_callbacks.get(ana, "call-1")
    assert placed is not None and placed.status == CallbackStatus.PLACED
    assert placed.call_sid == created.sid and placed.attempts == 1
    assert placed.opening == "Hi Ana, this is Acme Plumbing calling back about your last call."
    assert await placer.opening(ana, "call-1") == placed.opening
    assert await placer.place_due() == 0  # placed once
    # Answered and over: still placed. Twilio says a later one rang out: kept as failed.
    ref = CallRef("bakery", ana.key, "call-1")
    await placer.ended(ref, "completed")
    assert await desk.agent_callbacks.get(ana, "call-1") == placed
    await placer.ended(ref, "no-answer")
    unanswered = await desk.agent_callbacks.get(ana, "call-1")
    assert unanswered is not None and unanswered.status == CallbackStatus.FAILED
    assert unanswered.error == "the caller did not answer"

    twilio.unreachable.add(ANA_E164)
    await desk.request_agent_callback(ana, "call-2", by="Marta", reason="the boiler")
    assert await placer.place_due() == 0
    failed = await desk.agent_callbacks.get(ana, "call-2")
    assert failed is not None and failed.status == CallbackStatus.FAILED
    assert failed.attempts == 1 and failed.error is not None and "geographic" in failed.error
    assert ANA_E164[1:] not in failed.error
    # Kept on the follow-up: ``calls show`` says so too.
    assert "failed after 1 attempt(s)" in await shown("call-2", monkeypatch, line, capsys)
    # Forgotten: the call backs go with the rest.
    await runtime_of(line).store.forget(ana)
    assert await desk.agent_callbacks.of_caller(ana) == {}


def command_line_of(line: Line, monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
    """Point the in-process command line at the line's Redis and prefix (and ``extra``)."""
    settings = runtime_of(line).settings
    variables = {
        "REDIS_URL": settings.redis_url or "",
        "RAPPORT_PEPPER": PEPPER,
        "RAPPORT_KEY_PREFIX": settings.key_prefix,
    }
    for name, value in (variables | extra).items():
        monkeypatch.setenv(name, value)


async def shown(call_id: str, monkeypatch: pytest.MonkeyPatch, line: Line, capsys: Any) -> str:
    """What ``calls show CALL_ID`` prints for the line's agent."""
    command_line_of(line, monkeypatch)
    args = command_parser().parse_args(["calls", "show", call_id, "--agent", "bakery"])
    capsys.readouterr()
    assert await args.handler(args) == 0
    return str(capsys.readouterr().out)


async def test_calls_callback_from_the_command_line_rings_the_phone_given_and_is_audited(
    line: Line, twilio: FakeTwilioAPI, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await analysed_ana(line)
    command_line_of(
        line,
        monkeypatch,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_API_BASE_URL=twilio.base_url,
        RAPPORT_CALLBACK_FROM=BUSINESS,
    )
    args = command_parser().parse_args(
        ["calls", "callback", "call-1", "--agent", "bakery", "--to", STAFF]
    )
    assert await args.handler(args) == 0
    (created,) = twilio.created
    assert created.form["To"] == STAFF_E164
    args = command_parser().parse_args(
        [
            "calls",
            "callback",
            "call-1",
            "--agent",
            "bakery",
            "--agent-calls",
            "--reason",
            "the pipe",
        ]
    )
    assert await args.handler(args) == 0
    ana = caller_of(line, ANA)
    queued = await desk_of(line).agent_callbacks.get(ana, "call-1")
    assert queued is not None and queued.status == CallbackStatus.QUEUED
    assert queued.requested_by == "cli"
    entries = await AuditLog(runtime_of(line).redis, prefix=key_prefix).recent("bakery")
    assert [(e.action, e.caller, e.call_id, e.by) for e in entries] == [
        (AuditAction.AGENT_CALLBACK_REQUESTED, ana.masked, "call-1", "cli"),
        (AuditAction.CALLED_BACK, ana.masked, "call-1", "cli"),
    ]
    with pytest.raises(SystemExit):  # argparse: one line naming --to, exit 2
        command_parser().parse_args(
            ["calls", "callback", "call-1", "--agent", "bakery", "--to", "12"]
        )


async def test_the_number_at_rest_is_only_sealed_on_the_embedded_servers_disk(
    tmp_path: Path, line: Line
) -> None:
    """The embedded Redis's data folder, after the call and a rewrite: no raw number."""
    settings = MemorySettings(RAPPORT_DATA_DIR=str(tmp_path / "data"), RAPPORT_PEPPER=PEPPER)
    runtime = await open_memory(settings)
    try:
        assert line.memory is not None
        line.memory = MemoryAccess(runtime=runtime, queue=AnalysisQueue(runtime.redis))
        await ana_calls(line)
        ana = caller_of(line, ANA)
        assert await runtime.callback_number(ana) == ANA_E164
        await runtime.redis.bgrewriteaof()
        await _rewritten(runtime.redis)
        await runtime.redis.save()
        files = [path for path in (tmp_path / "data").rglob("*") if path.is_file()]
        assert files
        patterns = [re.escape(form).encode() for form in digit_forms(ANA_E164)]
        for path in files:
            content = path.read_bytes()
            assert not [p for p in patterns if re.search(p, content)], path.name
        assert b"contact" in b"".join(path.read_bytes() for path in files)  # it was written
    finally:
        await runtime.aclose()


async def _rewritten(redis: Redis) -> None:
    async def done() -> bool:
        info = await redis.info("persistence")
        busy = ("aof_rewrite_in_progress", "aof_rewrite_scheduled")
        return not any(int(info.get(name, 0)) for name in busy)

    await eventually(done)
