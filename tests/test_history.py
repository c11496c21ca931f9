"""The call history in SQL, on both real engines: SQLite and a PostgreSQL server of our own.

Every test taking ``history`` runs twice, once per engine. The worker writes through the real
queue on the suite's Redis and the fake Anthropic API; Postgres is Debian's binaries, started
by ``tests/support/postgres.py`` (installed first when missing).
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from redis.asyncio import Redis
from sqlalchemy import Connection, bindparam, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from memory.analysis.worker import JobOutcome, analysis_worker
from memory.errors import HistoryRefusedError, HistoryUnavailableError
from memory.health import check_health
from memory.history import store as history_module
from memory.history.store import CallHistory, history_database_url, upgrade_schema
from memory.history.tables import METADATA, UtcTime
from memory.metrics import HISTORY_UP
from memory.models import CallAnalysis, CallRecord, CallStatus, Turn, now
from memory.privacy.identity import CallerIdentity
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue
from tests.fakes.anthropic_server import FakeAnthropic, RecordedRequest, Reply
from tests.support.analysis_answers import answer
from tests.support.polling import eventually
from tests.support.postgres import PostgresServer
from tests.support.values import API_KEY
from tests.support.worker import (
    AGENT,
    BOB,
    EMBEDDER,
    TURNS,
    analysed_reply,
    analysis_settings,
    caller,
    hang_up,
    process_next,
    run_cli,
    subprocess_env,
)

DAY = 86_400.0
TOMBSTONE_S = 3600


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the module; each test gets a database of its own."""
    server = PostgresServer()
    server.create()
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
async def history_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The async URL of an empty history database, on each engine in turn."""
    if request.param == "sqlite":
        url = history_database_url(None, data_dir=tmp_path)
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = history_database_url(await server.new_database(), data_dir=tmp_path)
    assert url is not None
    return url


@pytest.fixture
async def history(history_url: str) -> AsyncIterator[CallHistory]:
    kept = CallHistory(history_url, tombstone_seconds=TOMBSTONE_S)
    try:
        yield kept
    finally:
        await kept.aclose()


@pytest.fixture
def history_store(redis_client: Redis, key_prefix: str, history: CallHistory) -> MemoryStore:
    """A memory store whose forget and export reach ``history``."""
    return MemoryStore(redis_client, prefix=key_prefix, history=history)


@pytest.fixture
def history_queue(redis_client: Redis, key_prefix: str) -> AnalysisQueue:
    return AnalysisQueue(redis_client, prefix=key_prefix)


def _worker(store: MemoryStore, queue: AnalysisQueue, fake: FakeAnthropic, **overrides: Any) -> Any:
    settings = analysis_settings(
        fake,
        request_timeout=10.0,
        backoff_max=0.05,
        max_retries=1,
        max_invalid_retries=1,
        claim_timeout=1.0,
        sweep_interval=0.2,
        stop_grace=2.0,
        **overrides,
    )
    return analysis_worker(store, queue, settings, embedder=EMBEDDER)


async def _everything_stored(url: str) -> str:
    """Every value of every history table, as one text (to look for what must not be there)."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            rows = []
            for table in ("calls", "analyses", "turns", "forgotten_callers"):
                rows += (await connection.execute(text(f"SELECT * FROM {table}"))).all()
    finally:
        await engine.dispose()
    return "\n".join(str(row) for row in rows)


def _record(call_id: str, *, ended: float, status: CallStatus = CallStatus.ENDED) -> CallRecord:
    return CallRecord(
        call_id=call_id,
        agent_id=AGENT,
        status=status,
        started_at=ended - 120,
        ended_at=ended,
        ended_reason="hangup",
        transcript=[
            Turn(role="user", text=f"About my order {call_id}", at=ended - 100),
            Turn(role="assistant", text="Of course.", at=ended - 90),
        ],
    )


def _analysed(record: CallRecord, **overrides: Any) -> CallRecord:
    analysis = CallAnalysis.model_validate(answer(facts=[], **overrides))
    return record.model_copy(update={"status": CallStatus.ANALYSED, "analysis": analysis})


# -- written by the worker ---------------------------------------------------------------------


async def test_the_worker_writes_a_call_when_it_closes_and_again_once_analysed(
    history_store: MemoryStore, history_queue: AnalysisQueue, history: CallHistory, history_url: str
) -> None:
    # The analysis is held until the test has seen the closed call in the history.
    release = asyncio.Event()

    async def held(_request: RecordedRequest) -> Reply:
        await release.wait()
        return analysed_reply(appointment="cake")

    async with FakeAnthropic(api_key=API_KEY, handler=held) as fake:
        who = await hang_up(history_store, history_queue, "call-1")
        async with _worker(history_store, history_queue, fake) as worker:
            job = await worker.next_job()
            assert job is not None
            processing = asyncio.create_task(worker.process(job))

            async def closed() -> bool:
                return await history.call(AGENT, "call-1") is not None

            await eventually(closed)
            found = await history.call(AGENT, "call-1")
            assert found is not None
            assert (found.record.status, found.record.analysis) == (CallStatus.ENDED, None)
            assert found.caller == who
            release.set()
            assert await processing == JobOutcome.ANALYSED

    found = await history.call(AGENT, "call-1")
    assert found is not None
    record = found.record
    assert record.status == CallStatus.ANALYSED
    assert record.analysis is not None and record.analysis.summary == answer()["summary"]
    assert (record.analysis.urgency, record.analysis.action) == (3, "send_quote")
    assert (record.masked_number, record.ended_reason) == (who.masked, "hangup")
    assert [turn.role for turn in record.transcript] == [role for role, _ in TURNS]
    assert "My PIN is [pin]." in record.transcript[1].text  # the redacted transcript
    stored = await _everything_stored(history_url)
    assert "4321" not in stored
    # Never the raw number: only the keyed hash and the masked form.
    assert "4155550123" not in stored.replace(" ", "") and who.key in stored
    counts = await history_queue.counts()
    assert (counts.waiting, counts.pending) == (0, 0)


async def test_a_dead_letter_is_in_the_history_with_its_reason(
    history_store: MemoryStore, history_queue: AnalysisQueue, history: CallHistory
) -> None:
    async with FakeAnthropic(api_key=API_KEY) as fake:
        fake.script(*[Reply.text("No tools today.")] * 2)
        await hang_up(history_store, history_queue, "call-1")
        async with _worker(history_store, history_queue, fake) as worker:
            assert await process_next(worker) == JobOutcome.DEAD

    found = await history.call(AGENT, "call-1")
    assert found is not None
    assert found.record.status == CallStatus.FAILED
    [letter] = await history_queue.dead_letters()
    assert found.record.error == letter.reason
    assert all("4321" not in turn.text for turn in found.record.transcript)


async def test_writes_are_idempotent_and_never_turn_an_analysed_call_back(
    history: CallHistory,
) -> None:
    who = caller()
    closed = _record("call-1", ended=now())
    assert await history.save(who, closed)
    assert await history.save(who, closed)  # a replayed close: the same row, once
    assert await history.save(who, _analysed(closed))
    assert not await history.save(who, closed)  # late: the analysed call stays
    analysed = _analysed(closed, urgency=5)
    assert await history.save(who, analysed)  # a re-analysis replaces the analysis

    [found] = await history.calls(AGENT, since=0, transcripts=True)
    assert found.record.status == CallStatus.ANALYSED
    assert found.record.analysis is not None and found.record.analysis.urgency == 5
    assert [turn.text for turn in found.record.transcript] == [
        turn.text for turn in closed.transcript
    ]


async def test_a_call_the_database_refuses_is_a_refusal_not_an_outage(history: CallHistory) -> None:
    too_long = _record("x" * 200, ended=now())  # call ids are at most 128 characters
    if history.backend == "sqlite":
        assert await history.save(caller(), too_long)  # SQLite does not enforce lengths
        return
    with pytest.raises(HistoryRefusedError):
        await history.save(caller(), too_long)
    assert await history.ping()  # the database is up: nothing to wait for


# -- forget --------------------------------------------------------------------------------------


async def test_forgetting_a_caller_deletes_their_rows_and_refuses_late_writes(
    history_store: MemoryStore, history: CallHistory, history_url: str
) -> None:
    alice, bob = caller(), caller(BOB)
    late = _record("alice-2", ended=now())
    await history.save(alice, _analysed(_record("alice-1", ended=now() - DAY)))
    await history.save(bob, _record("bob-1", ended=now()))

    removed = await history_store.forget(alice)

    assert removed["history_calls"] == 1
    assert [found.record.call_id for found in await history.calls(AGENT, since=0)] == ["bob-1"]
    # A write of a call that began before the forget (a worker still busy with it) is refused.
    assert not await history.save(alice, late)
    stored = await _everything_stored(history_url)
    assert "alice-1" not in stored and "About my order alice" not in stored
    assert "About my order bob-1" in stored
    if history.backend == "sqlite":
        # secure_delete: the erased text is overwritten in the file, not only unlinked.
        raw = await asyncio.to_thread(Path(history.where).read_bytes)
        assert b"About my order alice-1" not in raw
        assert answer()["summary"].encode() not in raw
        assert b"About my order bob-1" in raw
    # A call the caller begins after the forget is their new history.
    fresh = _record("alice-3", ended=now() + 200)
    assert await history.save(alice, fresh)


async def test_a_forget_stops_before_deleting_anything_when_the_history_is_down(
    redis_client: Redis, key_prefix: str, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the history's folder should be")
    url = history_database_url(None, data_dir=blocked)
    assert url is not None
    down = CallHistory(url, tombstone_seconds=TOMBSTONE_S)
    store = MemoryStore(redis_client, prefix=key_prefix, history=down)
    who = caller()
    await store.append_turn(who, Turn(role="user", text="Keep me", call_id="call-1"))

    with pytest.raises(HistoryUnavailableError, match="nothing was forgotten"):
        await store.forget(who)

    assert [turn.text for turn in (await store.load(who)).recent_turns] == ["Keep me"]
    await down.aclose()


async def test_a_callers_export_includes_their_history(
    history_store: MemoryStore, history: CallHistory
) -> None:
    alice = caller()
    # Older than Redis holds: only the history has it.
    await history.save(alice, _analysed(_record("alice-old", ended=now() - 400 * DAY)))
    await history.save(caller(BOB), _record("bob-1", ended=now()))

    exported = await history_store.export(alice)

    assert [call["call_id"] for call in exported["history"]] == ["alice-old"]
    assert exported["history"][0]["analysis"]["summary"] == answer()["summary"]
    assert exported["history"][0]["transcript"][0]["text"] == "About my order alice-old"


# -- the questions people ask ------------------------------------------------------------------


async def test_urgent_calls_last_month_a_callers_march_and_everything_since(
    history: CallHistory, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = caller(), caller(BOB)
    today = now()
    await history.save(alice, _analysed(_record("a-urgent", ended=today - 3 * DAY), urgency=5))
    await history.save(alice, _analysed(_record("a-calm", ended=today - 5 * DAY), urgency=1))
    await history.save(bob, _analysed(_record("b-old-urgent", ended=today - 60 * DAY), urgency=4))
    await history.save(bob, _record("b-unanalysed", ended=today - 1 * DAY))
    await history.save(alice, _analysed(_record("a-march", ended=today - 250 * DAY)))

    urgent = await history.calls(AGENT, since=today - 30 * DAY, min_urgency=4)
    assert [found.record.call_id for found in urgent] == ["a-urgent"]

    march = await history.calls(
        AGENT, since=today - 260 * DAY, until=today - 240 * DAY, caller_key=alice.key
    )
    assert [found.record.call_id for found in march] == ["a-march"]
    assert march[0].record.analysis is not None

    quotes = await history.calls(AGENT, since=0, action="send_quote")
    assert len(quotes) == 4

    monkeypatch.setattr(history_module, "EXPORT_BATCH", 2)
    exported = [found async for found in history.export(AGENT, since=today - 365 * DAY)]
    assert [found.record.call_id for found in exported] == [
        "b-unanalysed",
        "a-urgent",
        "a-calm",
        "b-old-urgent",
        "a-march",
    ]
    assert all(found.record.transcript for found in exported)
    assert [found.record.call_id async for found in history.export("other", since=0)] == []


async def test_retention_deletes_only_calls_past_it(history_url: str) -> None:
    history = CallHistory(history_url, retention_days=30, tombstone_seconds=TOMBSTONE_S)
    try:
        who = caller()
        await history.save(who, _analysed(_record("old", ended=now() - 31 * DAY)))
        await history.save(who, _record("recent", ended=now() - 29 * DAY))

        assert await history.expire() == 1

        assert [found.record.call_id for found in await history.calls(AGENT, since=0)] == ["recent"]
    finally:
        await history.aclose()


async def test_the_worker_sweeper_applies_the_history_retention(
    redis_client: Redis, key_prefix: str, history_url: str, history_queue: AnalysisQueue
) -> None:
    history = CallHistory(history_url, retention_days=30, tombstone_seconds=TOMBSTONE_S)
    store = MemoryStore(redis_client, prefix=key_prefix, history=history)
    try:
        await history.save(caller(), _record("old", ended=now() - 40 * DAY))
        async with FakeAnthropic(api_key=API_KEY) as fake, _worker(store, history_queue, fake) as w:
            await w.sweep()
        assert await history.calls(AGENT, since=0) == []
    finally:
        await history.aclose()


# -- migrations -------------------------------------------------------------------------------


def _upgrade_to(revision: str) -> Any:
    def upgrade(connection: Connection) -> None:
        config = history_module.Config()
        config.set_main_option("script_location", str(history_module.MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    return upgrade


def _schema_differences(connection: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(connection), METADATA))


async def test_migrations_upgrade_an_existing_database_and_build_the_tables(
    history_url: str,
) -> None:
    engine = create_async_engine(history_url)
    try:
        # A history written by the first release, before forget tombstones existed.
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_to("0001"))
            insert_call = text(
                "INSERT INTO calls (agent_id, call_id, caller_key, status, started_at, ended_at, "
                "recorded_at) VALUES (:agent, 'call-old', :key, 'ended', :at, :at, :at)"
            ).bindparams(bindparam("at", type_=UtcTime))
            await connection.execute(
                insert_call, {"agent": AGENT, "key": caller().key, "at": now() - 300 * DAY}
            )
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        assert "forgotten_callers" not in tables

        history = CallHistory(history_url, tombstone_seconds=TOMBSTONE_S)
        assert await history.ping()  # migrates to the newest on first use
        [found] = await history.calls(AGENT, since=0)
        assert found.record.call_id == "call-old"
        assert await history.forget(caller()) == 1
        await history.aclose()

        async with engine.begin() as connection:
            assert await connection.run_sync(_schema_differences) == []
            await connection.run_sync(upgrade_schema)  # again: nothing to do
    finally:
        await engine.dispose()


# -- an unreachable database ---------------------------------------------------------------------


async def test_a_history_that_is_down_shows_on_health_and_metrics(
    history_queue: AnalysisQueue, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    url = history_database_url(None, data_dir=blocked)
    assert url is not None
    down = CallHistory(url, tombstone_seconds=TOMBSTONE_S)
    await history_queue.beat()

    health = await check_health(history_queue, heartbeat_max_age=30, history=down)

    assert (health.healthy, health.failing, health.history) == (False, ["history"], "down")
    assert HISTORY_UP._value.get() == 0
    await down.aclose()


async def test_a_postgres_stopped_mid_run_holds_calls_in_the_queue_until_it_is_back(
    redis_client: Redis, key_prefix: str, tmp_path: Path
) -> None:
    server = PostgresServer()
    server.create()
    server.start()
    history = None
    try:
        url = history_database_url(await server.new_database(), data_dir=tmp_path)
        assert url is not None
        history = CallHistory(url, tombstone_seconds=TOMBSTONE_S)
        store = MemoryStore(redis_client, prefix=key_prefix, history=history)
        queue = AnalysisQueue(redis_client, prefix=key_prefix)
        assert await history.ping()
        await queue.beat()
        async with FakeAnthropic(api_key=API_KEY) as fake:
            fake.script(analysed_reply(), analysed_reply())
            async with _worker(store, queue, fake, concurrency=1) as worker:
                stop = asyncio.Event()
                running = asyncio.create_task(worker.run(stop))
                server.stop()
                who = await hang_up(store, queue, "call-1")

                async def analysed_in_redis() -> bool:
                    record = await store.get_call(who, "call-1")
                    return record is not None and record.status == CallStatus.ANALYSED

                await eventually(analysed_in_redis, within=30)
                # Analysed into memory, but the job waits until the history has the call.
                assert (await queue.counts()).pending == 1
                health = await check_health(queue, heartbeat_max_age=30, history=history)
                assert health.failing == ["history"]

                server.start()

                async def arrived() -> bool:
                    return (await queue.counts()).pending == 0

                await eventually(arrived, within=30)
                stop.set()
                await running

        found = await history.call(AGENT, "call-1")
        assert found is not None and found.record.status == CallStatus.ANALYSED
        assert (await check_health(queue, heartbeat_max_age=30, history=history)).healthy
        assert len(fake.requests) == 1
    finally:
        if history is not None:
            await history.aclose()
        server.remove()


# -- configuration ---------------------------------------------------------------------------------


def test_history_urls(tmp_path: Path) -> None:
    assert history_database_url("none", data_dir=tmp_path) is None
    assert history_database_url(None, data_dir=tmp_path) == (
        f"sqlite+aiosqlite:///{tmp_path.resolve()}/history.sqlite3"
    )
    assert history_database_url("postgres://u:p@db/calls", data_dir=tmp_path) == (
        "postgresql+asyncpg://u:p@db/calls"
    )
    assert history_database_url("sqlite:////srv/calls.db", data_dir=tmp_path) == (
        "sqlite+aiosqlite:////srv/calls.db"
    )
    for bad in ("mysql://db/calls", "not a url"):
        with pytest.raises(Exception, match="RAPPORT_HISTORY_URL"):
            history_database_url(bad, data_dir=tmp_path)


async def test_the_export_of_a_caller_the_history_never_saw_has_an_empty_history(
    history_store: MemoryStore,
) -> None:
    nobody = CallerIdentity(agent_id=AGENT, key="0" * 64, masked="+1•••00")
    assert (await history_store.export(nobody))["history"] == []


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


@pytest.mark.slow
def test_the_migrations_ship_in_the_package_and_run_from_an_installed_copy(tmp_path: Path) -> None:
    # Built from a copy of the sources, so the build leaves nothing in the work tree.
    root, source = Path(__file__).resolve().parents[1], _mkdir(tmp_path / "source")
    for name in ("pyproject.toml", "README.md", "runner.py"):
        shutil.copy2(root / name, source / name)
    for package in ("memory", "bot", "processors", "cli", "web"):
        ignored = shutil.ignore_patterns("__pycache__")
        shutil.copytree(root / package, source / package, ignore=ignored)
    wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", _mkdir(tmp_path / "else")
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", wheels, source], check=True, timeout=600)
    [wheel] = wheels.glob("rapport-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True, timeout=600)
    script = (
        "import asyncio, memory\n"
        "from pathlib import Path\n"
        "from memory.history.store import CallHistory, history_database_url\n"
        "async def main():\n"
        "    history = CallHistory(history_database_url(None, data_dir=Path('data')),"
        " tombstone_seconds=60)\n"
        "    assert await history.ping()\n"
        "    await history.aclose()\n"
        "    print(memory.__file__)\n"
        "asyncio.run(main())\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script],
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert ran.stdout.strip() == str(site / "memory" / "__init__.py")
    connection = sqlite3.connect(elsewhere / "data" / "history.sqlite3")
    tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
    connection.close()
    assert {"calls", "analyses", "turns", "forgotten_callers", "alembic_version"} <= tables


@pytest.mark.slow
async def test_the_calls_commands_reach_back_into_the_history_and_export_it(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    # The test's own SQLite history (tests/conftest.py), which the commands open too.
    url = history_database_url(os.environ["RAPPORT_HISTORY_URL"], data_dir=tmp_path)
    assert url is not None
    history = CallHistory(url, tombstone_seconds=TOMBSTONE_S)
    alice, bob = caller(), caller(BOB)
    old = _analysed(_record("call-last-spring", ended=now() - 200 * DAY), action="call_back")
    await history.save(alice, old)
    formula = _record("call-formula", ended=now() - 150 * DAY)
    await history.save(bob, _analysed(formula, summary="=HYPERLINK(1)", action="none"))
    await history.aclose()
    env = subprocess_env(redis_url, key_prefix, COLUMNS="250")

    def cli(*args: str) -> Awaitable[str]:
        return run_cli(env, *args, subprocess=False)

    # The first command as a process of its own; the others through the same entry in this one.
    assert "call-last-spring" not in await run_cli(env, "calls", "list", "--agent", AGENT)
    listed = await cli("calls", "list", "--agent", AGENT, "--since", "1y")
    assert "call-last-spring" in listed and alice.masked in listed
    assert "call-formula" not in listed  # its action is none: not a follow-up
    shown = await cli("calls", "show", "call-last-spring", "--agent", AGENT)
    assert "About my order call-last-spring" in shown and "call_back" in shown
    stats = await cli("calls", "stats", "--agent", AGENT, "--since", "1y")
    assert "2 (0 with a report)" in stats

    exported = tmp_path / "calls.csv"
    await cli("calls", "export", "--agent", AGENT, "--since", "1y", "--output", str(exported))
    with exported.open(newline="", encoding="utf-8") as rows:
        table = list(csv.DictReader(rows))
    assert [row["call_id"] for row in table] == ["call-formula", "call-last-spring"]
    assert table[0]["summary"] == "'=HYPERLINK(1)"  # text, never a formula
    assert table[1]["action"] == "call_back" and table[1]["caller"] == alice.masked
    assert table[1]["transcript"] == "caller: About my order call-last-spring\nagent: Of course."
    lines = await cli("calls", "export", "--agent", AGENT, "--since", "1y", "--format", "jsonl")
    calls = [json.loads(line) for line in lines.splitlines()]
    assert [(c["call_id"], c["caller_key"]) for c in calls] == [
        ("call-formula", bob.key),
        ("call-last-spring", alice.key),
    ]
    assert calls[1]["analysis"]["summary"] == answer()["summary"]
    assert "4155550123" not in lines.replace(" ", "")
