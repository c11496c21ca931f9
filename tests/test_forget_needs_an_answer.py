"""``memory forget`` run with nobody to answer its question deletes nothing and says why."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue
from tests.support.worker import AGENT, ALICE, hang_up, snapshot, subprocess_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


async def test_forget_without_a_terminal_or_yes_deletes_nothing(
    tmp_path: Path,
    redis_url: str,
    key_prefix: str,
    redis_client: Redis,
    store: MemoryStore,
    queue: AnalysisQueue,
) -> None:
    await hang_up(store, queue, "call-1")
    before = await snapshot(redis_client, key_prefix)
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            str(REPO / "runner.py"),
            "memory",
            "forget",
            "--agent",
            AGENT,
            "--caller",
            ALICE,
        ],
        cwd=tmp_path,
        env={**subprocess_env(redis_url, key_prefix), "PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert (
        result.stderr.splitlines()[-1] == "rapport memory: no answer, nothing deleted (use --yes)"
    )
    assert "Traceback" not in result.stderr
    assert await snapshot(redis_client, key_prefix) == before
