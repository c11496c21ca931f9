"""Shared fixtures: one real Redis per test session.

``REDIS_URL`` selects an existing Redis; without it an embedded server runs in a temporary
directory for the session. Tests may share a user's real Redis, so they never FLUSHDB: every
store a test builds uses its own ``key_prefix``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio

from memory.embedded import EmbeddedRedis, client_from_url
from memory.queue import AnalysisQueue
from memory.store import MemoryStore


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of the session's Redis: ``REDIS_URL`` or a fresh embedded server."""
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    data_dir = Path(tempfile.mkdtemp(prefix="rapport-test-redis-"))
    try:
        with EmbeddedRedis(data_dir=data_dir) as server:
            yield server.url
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


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
    return f"rapport-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(redis_client: redis.asyncio.Redis, key_prefix: str) -> MemoryStore:
    """A store on the session's Redis, under this test's own prefix."""
    return MemoryStore(redis_client, prefix=key_prefix)


@pytest.fixture
def queue(redis_client: redis.asyncio.Redis, key_prefix: str) -> AnalysisQueue:
    """The analysis queue on the session's Redis, under this test's own prefix."""
    return AnalysisQueue(redis_client, prefix=key_prefix)
