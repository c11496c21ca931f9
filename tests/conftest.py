"""Shared fixtures: one real Redis per test session.

``REDIS_URL`` selects an existing Redis; without it an embedded server runs in a temporary
directory for the session. Tests may share a user's real Redis, so they never FLUSHDB: every
store a test builds uses its own ``key_prefix``.

Any test in which the Anthropic fake refused a request as the real API would fails (see
:class:`tests.fakes.anthropic_server.FakeAnthropic`).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
import redis
import redis.asyncio
from anthropic import AsyncAnthropic

from memory.analysis.settings import AnalysisSettings
from memory.analysis.worker import AnalysisWorker, analysis_worker
from memory.backend.connect import client_from_url
from memory.backend.embedded import EmbeddedRedis
from memory.privacy.identity import normalize_number
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.twilio_api import FakeTwilioAPI
from tests.support.background import BackgroundLoop
from tests.support.call_harness import Line, open_line
from tests.support.values import API_KEY, new_key_prefix
from tests.support.worker import EMBEDDER, WorkerFactory, analysis_settings


@pytest.fixture(autouse=True)
def _own_config_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generated pepper goes to a per-test config folder, never the user's own."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))


@pytest.fixture(autouse=True)
def _own_call_history(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test's call history is a SQLite file of its own, never the repository's data folder
    (call ids repeat between tests, and a history keeps them)."""
    folder = tmp_path_factory.mktemp("history")
    monkeypatch.setenv("RAPPORT_HISTORY_URL", f"sqlite:///{folder / 'history.sqlite3'}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Fail the test in which any LLM request broke the real API's rules.

    Checked at the end of the test's own run (so ``xfail`` covers it), before its fixtures close
    the fakes (which check again for requests sent while they wind down).
    """
    try:
        return (yield)
    finally:
        for fake in FakeAnthropic.running():
            fake.assert_no_rejections()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of the session's Redis: ``REDIS_URL`` or a fresh embedded server.

    When the session ends, every key and value the tests left in it is checked for the phone
    numbers the tests used: none may be stored raw.
    """
    if url := os.environ.get("REDIS_URL"):
        yield url
        _assert_no_raw_numbers(url)
        return
    data_dir = Path(tempfile.mkdtemp(prefix="rapport-test-redis-"))
    try:
        with EmbeddedRedis(data_dir=data_dir) as server:
            yield server.url
            _assert_no_raw_numbers(server.url)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


# A phone number, or the start of one an f-string completes ("+1 415 555 01{i:02d}").
_NUMBER_IN_SOURCE = re.compile(r"\+\d[\d \-().]{8,}\d")


def _numbers_used_in_tests() -> set[str]:
    """Digit strings of every number the tests spell out: E.164 digits and national forms."""
    found: set[str] = set()
    for source in Path(__file__).parent.rglob("*.py"):
        for match in _NUMBER_IN_SOURCE.findall(source.read_text(encoding="utf-8")):
            digits = re.sub(r"\D", "", match)
            if len(digits) >= 9:
                found.add(digits)
            e164 = normalize_number(match)
            national = str(phonenumbers.parse(e164).national_number) if e164 else ""
            if len(national) >= 10:  # shorter ones ("123456789") match unrelated test data
                found.add(national)
    return found


def _assert_no_raw_numbers(url: str) -> None:
    numbers = _numbers_used_in_tests()
    client = redis.Redis.from_url(url)
    leaks = []
    for key in client.scan_iter(match="rapport-test-*", count=1000):
        kind = client.type(key)
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"hash":
            values = [item for pair in client.hgetall(key).items() for item in pair]
        elif kind == b"list":
            values = client.lrange(key, 0, -1)
        elif kind in (b"set", b"zset"):
            values = list(client.smembers(key) if kind == b"set" else client.zrange(key, 0, -1))
        else:  # streams: the analysis queue
            values = [
                v for _, fields in client.xrange(key) for pair in fields.items() for v in pair
            ]
        text = b"\n".join([key, *values]).decode("latin-1")
        leaks += [number for number in numbers if number in text]
    client.close()
    assert not leaks, f"raw phone numbers stored in Redis: {sorted(set(leaks))}"


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A client of the session's Redis, configured as in production, closed after the test."""
    client = client_from_url(redis_url, connect_timeout=2.0, command_timeout=5.0)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses, e.g. ``rapport-test-1a2b3c4d``."""
    return new_key_prefix()


@pytest.fixture
def store(redis_client: redis.asyncio.Redis, key_prefix: str) -> MemoryStore:
    """A store on the session's Redis, under this test's own prefix."""
    return MemoryStore(redis_client, prefix=key_prefix)


@pytest.fixture
def queue(redis_client: redis.asyncio.Redis, key_prefix: str) -> AnalysisQueue:
    """The analysis queue on the session's Redis, under this test's own prefix."""
    return AnalysisQueue(redis_client, prefix=key_prefix)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    """A fake Anthropic API on a local port, accepting ``API_KEY``."""
    async with FakeAnthropic(api_key=API_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def background() -> Iterator[BackgroundLoop]:
    """An event loop in a thread, for servers the module's tests share (a bot takes seconds to
    start): they outlive each test's own loop (``tests/support/background.py``)."""
    with BackgroundLoop() as loop:
        yield loop


@pytest.fixture(scope="module")
def module_prefix() -> str:
    """A key prefix for what the module's tests share (a bot); each test keeps to its own
    callers and calls under it."""
    return new_key_prefix()


@pytest.fixture(scope="module")
def module_fake(background: BackgroundLoop) -> FakeAnthropic:
    """A fake Anthropic API the module's tests share, accepting ``API_KEY``."""
    return background.enter(FakeAnthropic(api_key=API_KEY))


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[AsyncAnthropic]:
    """The SDK client the e2e calls' LLM service uses, pointed at ``fake``."""
    async with AsyncAnthropic(api_key="test-key", base_url=fake.base_url) as anthropic:
        yield anthropic


@pytest.fixture
async def line(
    fake: FakeAnthropic, client: AsyncAnthropic, redis_url: str, key_prefix: str
) -> AsyncIterator[Line]:
    """A business line taking calls through the bot's own call assembly
    (``tests/support/call_harness.py``)."""
    memory = await open_line(redis_url, key_prefix)
    try:
        yield Line(fake, client, memory)
    finally:
        await memory.runtime.aclose()


@pytest.fixture
async def twilio_api() -> AsyncIterator[FakeTwilioAPI]:
    """Twilio's REST API (call updates), on a local port."""
    async with FakeTwilioAPI() as server:
        yield server


@pytest.fixture
def worker_settings(fake: FakeAnthropic) -> AnalysisSettings:
    """Analysis-worker settings against ``fake``, every wait short enough for a test."""
    return analysis_settings(
        fake,
        request_timeout=10.0,
        backoff_max=0.05,
        max_retries=3,
        max_invalid_retries=2,
        claim_timeout=1.0,
        idle_timeout=0.5,
        sweep_interval=0.2,
        stop_grace=2.0,
        concurrency=2,
    )


@pytest.fixture
def make_worker(
    store: MemoryStore, queue: AnalysisQueue, worker_settings: AnalysisSettings
) -> WorkerFactory:
    """A worker built as production builds it, with some settings replaced."""

    def make(**overrides: Any) -> AbstractAsyncContextManager[AnalysisWorker]:
        return analysis_worker(
            store, queue, worker_settings.model_copy(update=overrides), embedder=EMBEDDER
        )

    return make


@pytest.fixture
async def worker(make_worker: WorkerFactory) -> AsyncIterator[AnalysisWorker]:
    """A worker from ``make_worker`` with ``worker_settings`` as they are."""
    async with make_worker() as built:
        yield built


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    """An embedded Redis of the test's own, which it may stop and start again."""
    server = EmbeddedRedis(data_dir=tmp_path / "redis")
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)
