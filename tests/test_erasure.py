"""Erasure reaches the disk: after a forget, the append-only file is rewritten within the bound."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import redis.asyncio
from loguru import logger

from memory.backend.connect import client_from_url, open_redis
from memory.backend.embedded import redis_server_binary
from memory.models import CallAnalysis, CallRecord, Fact, Turn, now
from memory.privacy.erasure import ErasureScheduler, erasure_key, schedule_erasure
from memory.privacy.identity import CallerIdentity, identify
from memory.runtime import memory_runtime
from memory.settings import MemorySettings
from memory.store.callers import MemoryStore
from tests.support.values import PEPPER, PEPPER_BYTES

#: Runs the embedded redis-server (see pyproject.toml).
pytestmark = pytest.mark.slow

RUNNER = [sys.executable, "runner.py"]
MARKER = "zebra-quartz-7731"
BOUND_S = 1.0


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[tuple[redis.asyncio.Redis, Path]]:
    client, close = await open_redis(
        redis_url=None, data_dir=tmp_path / "data", connect_timeout=1, command_timeout=2
    )
    try:
        yield client, tmp_path / "data"
    finally:
        await close()


def files_holding(folder: Path, needle: bytes) -> list[Path]:
    """Every file under ``folder`` (AOF directories included) whose bytes contain ``needle``."""
    return [p for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def rewrite_finished(client: redis.asyncio.Redis, prefix: str) -> None:
    """Wait until no erasure is pending and the server has finished rewriting, successfully."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        info = await client.info("persistence")
        if (
            await client.get(erasure_key(prefix)) is None
            and info["aof_rewrite_in_progress"] == 0
            and info["aof_rewrite_scheduled"] == 0
        ):
            assert info["aof_last_bgrewrite_status"] == "ok"
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the append-only file was not rewritten in time")


async def store_marked_caller(store: MemoryStore) -> CallerIdentity:
    caller = identify("+1 415 555 0188", agent_id="acme", pepper=PEPPER_BYTES)
    assert caller is not None
    await store.append_turn(caller, Turn(role="user", text=f"I am {MARKER}", call_id="c1"))
    record = CallRecord(
        call_id="c1",
        agent_id="acme",
        started_at=now() - 60,
        ended_at=now(),
        transcript=[Turn(role="user", text=f"I am {MARKER}", call_id="c1")],
        analysis=CallAnalysis(
            summary=f"Talked about {MARKER}",
            urgency=1,
            action="none",
            sentiment="neutral",
            language="en",
        ),
    )
    await store.record_call(caller, record, facts=[Fact(text=f"Caller's pet is {MARKER}")])
    await store.set_name(caller, f"Ana {MARKER}")
    # What is stored of the number: the country code and the last two digits, nothing more.
    assert (await store.load(caller)).profile.masked_number == "+1•••88"
    return caller


async def test_a_forgotten_caller_leaves_the_data_folder_within_the_bound(
    embedded: tuple[redis.asyncio.Redis, Path],
) -> None:
    client, folder = embedded
    store = MemoryStore(client, prefix="erase", erasure_rewrite_s=BOUND_S)
    caller = await store_marked_caller(store)
    await asyncio.sleep(1.2)  # appendfsync everysec
    assert files_holding(folder, MARKER.encode()), "the marker never reached the disk"

    scheduler = ErasureScheduler(client, prefix="erase", bound_s=BOUND_S)
    stop = asyncio.Event()
    running = asyncio.create_task(scheduler.run(stop))
    try:
        forgotten_at = now()
        removed = await store.forget(caller)
        assert forgotten_at < removed["rewrite_by"] <= forgotten_at + BOUND_S + 1
        await asyncio.sleep(BOUND_S)
        await rewrite_finished(client, "erase")
    finally:
        stop.set()
        await running
    assert files_holding(folder, MARKER.encode()) == []
    # The caller's keyed hash stays in one key, the tombstone, which links to no number
    # without the pepper (kept outside the data folder).


async def test_many_forgets_share_one_deadline(redis_client: redis.asyncio.Redis) -> None:
    first = await schedule_erasure(redis_client, prefix="coalesce", bound_s=600)
    second = await schedule_erasure(redis_client, prefix="coalesce", bound_s=600)
    assert second == pytest.approx(first, abs=0.01)
    assert now() + 500 < first <= now() + 600
    scheduler = ErasureScheduler(redis_client, prefix="coalesce", bound_s=600)
    assert await scheduler.rewrite_if_due() is False  # not due yet
    await redis_client.delete(erasure_key("coalesce"))


@pytest.fixture
def managed_redis(tmp_path: Path) -> Iterator[Path]:
    """A Redis that renamed BGREWRITEAOF away, as managed services do; yields its socket."""
    socket = tmp_path / "managed.sock"
    server = subprocess.Popen(
        [
            str(redis_server_binary()),
            "--port",
            "0",
            "--unixsocket",
            str(socket),
            "--dir",
            str(tmp_path),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--rename-command",
            "BGREWRITEAOF",
            "",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        yield socket
    finally:
        server.terminate()
        server.wait()


async def test_a_server_refusing_the_rewrite_is_logged_once(managed_redis: Path) -> None:
    """One warning, and the erasure is dropped (retrying cannot help)."""
    client = client_from_url(f"unix://{managed_redis}", connect_timeout=1, command_timeout=2)
    warnings: list[str] = []
    sink = logger.add(warnings.append, level="WARNING", format="{message}")
    try:
        for _ in range(50):
            with contextlib.suppress(redis.RedisError):
                if await client.ping():
                    break
            await asyncio.sleep(0.05)
        scheduler = ErasureScheduler(client, prefix="refused", bound_s=1)
        for _ in range(2):
            await client.set(erasure_key("refused"), repr(now() - 1))
            assert await scheduler.rewrite_if_due() is False
            assert await client.get(erasure_key("refused")) is None
    finally:
        logger.remove(sink)
        await client.aclose()
    assert len(warnings) == 1 and "refused BGREWRITEAOF" in warnings[0]


def test_memory_forget_says_when_the_data_leaves_the_disk(redis_url: str, key_prefix: str) -> None:
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "RAPPORT_PEPPER": PEPPER,
        "RAPPORT_KEY_PREFIX": key_prefix,
        "RAPPORT_ERASURE_REWRITE_S": "120",
    }
    before = datetime.now(UTC)
    result = subprocess.run(
        [*RUNNER, "memory", "forget", "--agent", "acme", "--caller", "+1 415 555 0188", "--yes"],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    after = datetime.now(UTC)
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    match = re.search(r"rewritten by (\d\d:\d\d) UTC at the latest", out)
    assert match, out
    # The forget happened somewhere between the two clock readings (the command takes seconds
    # to start), so the bound ends 120 s after the later one; the time is printed to the minute.
    latest = after + timedelta(seconds=120)
    seconds = math.ceil((latest - before).total_seconds())
    within_bound = {(before + timedelta(seconds=s)).strftime("%H:%M") for s in range(seconds + 1)}
    assert match.group(1) in within_bound


async def test_the_data_folder_holds_no_pepper(tmp_path: Path) -> None:
    """A copy of the data folder alone cannot be keyed back to numbers."""
    settings = MemorySettings(
        REDIS_URL=None, RAPPORT_PEPPER=None, RAPPORT_DATA_DIR=tmp_path / "data"
    )
    async with memory_runtime(settings) as runtime:
        await store_marked_caller(runtime.store)
        await asyncio.sleep(1.2)  # appendfsync everysec
        pepper = runtime.pepper
    assert not (tmp_path / "data" / "pepper").exists()
    assert files_holding(tmp_path / "data", pepper) == []
    assert files_holding(tmp_path / "data", MARKER.encode())  # the data itself is there
