"""The embedded Redis is supervised: killed, it is relaunched and memory comes back by itself."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from loguru import logger

from memory.backend.connect import open_redis
from memory.errors import MemoryUnavailableError
from memory.privacy.identity import identify
from memory.store.callers import MemoryStore
from tests.support.values import PEPPER_BYTES

#: Runs the embedded redis-server (see pyproject.toml).
pytestmark = pytest.mark.slow


async def test_a_killed_embedded_server_is_back_within_seconds(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    client, close = await open_redis(
        redis_url=None, data_dir=data_dir, connect_timeout=0.5, command_timeout=0.5
    )
    messages: list[str] = []
    sink = logger.add(messages.append, level="INFO", format="{level} {message}")
    caller = identify("+1 415 555 0177", agent_id="acme", pepper=PEPPER_BYTES)
    assert caller is not None
    try:
        store = MemoryStore(client, prefix="supervised")
        await store.set_name(caller, "Marta")
        await asyncio.sleep(1.2)  # appendfsync everysec: the name is on disk
        os.kill(int((data_dir / "redis.pid").read_text()), signal.SIGKILL)

        with pytest.raises(MemoryUnavailableError):  # no memory: the call goes on without
            await store.load(caller)
        killed = time.monotonic()
        while True:
            try:
                memory = await store.load(caller)
                break
            except MemoryUnavailableError:
                assert time.monotonic() - killed < 10, "memory did not come back within 10 s"
                await asyncio.sleep(0.1)
        assert memory.profile.name == "Marta"  # relaunched from its append-only file
        await asyncio.sleep(1.5)  # no more lines once it is back
    finally:
        logger.remove(sink)
        await close()
    went = [m for m in messages if m.startswith("WARNING") and "embedded Redis" in m]
    back = [m for m in messages if "embedded Redis server is back" in m]
    assert len(went) == 1 and len(back) == 1, messages
