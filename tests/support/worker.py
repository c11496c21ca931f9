"""What the analysis-worker tests share: callers, a hung-up call, worker settings, Redis state.

The fixtures built on these (``worker_settings``, ``make_worker``, ``worker``) are in
``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from memory.analysis.analyzer import TOOL_NAME
from memory.analysis.settings import AnalysisSettings
from memory.analysis.worker import AnalysisWorker, JobOutcome
from memory.calls.closing import end_call
from memory.models import CallRecord, Turn, now
from memory.privacy.identity import CallerIdentity, identify
from memory.recall.embeddings import HashingEmbedder
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue
from tests.fakes.anthropic_server import FakeAnthropic, Reply
from tests.support.analysis_answers import answer
from tests.support.entry import in_this_process
from tests.support.values import API_KEY, PEPPER

ROOT = Path(__file__).resolve().parents[2]
ALICE = "+1 415 555 0123"
BOB = "+34 600 123 456"
AGENT = "acme"
#: Fast and deterministic; the default model is exercised by the embeddings tests.
EMBEDDER = HashingEmbedder()
#: How long a test waits for a worker (or a worker process) to get somewhere.
WAIT_S = 20.0

WorkerFactory = Callable[..., AbstractAsyncContextManager[AnalysisWorker]]


def caller(number: str = ALICE) -> CallerIdentity:
    identity = identify(number, agent_id=AGENT, pepper=PEPPER.encode())
    assert identity is not None
    return identity


def analysed_reply(*, delay: float = 0.0, **overrides: Any) -> Reply:
    return Reply.tool_call(TOOL_NAME, answer(**overrides), delay=delay)


def analysis_settings(fake: FakeAnthropic, **overrides: Any) -> AnalysisSettings:
    """Worker settings against ``fake``, with quick back-off."""
    return AnalysisSettings(api_key=API_KEY, base_url=fake.base_url, backoff_base=0.01, **overrides)


TURNS = [
    ("assistant", "Bella's Bakery, how can I help?"),
    ("user", "Hi, it's Marta. A cake for Friday please. My PIN is 4321."),
    ("assistant", "Of course. I'll send you a quote today."),
]


async def hang_up(
    store: MemoryStore,
    queue: AnalysisQueue,
    call_id: str,
    *,
    who: CallerIdentity | None = None,
    turns: list[tuple[str, str]] = TURNS,
) -> CallerIdentity:
    """A call as the bot makes it: turns appended as they happen, then ended."""
    who = who or caller()
    started = now()
    for role, text in turns:
        await store.append_turn(who, Turn(role=role, text=text, call_id=call_id))
    record = CallRecord(
        call_id=call_id,
        agent_id=who.agent_id,
        started_at=started,
        ended_at=now(),
        ended_reason="hangup",
    )
    assert await end_call(store, queue, who, record)
    return who


async def process_next(worker: AnalysisWorker) -> JobOutcome:
    job = None
    for _ in range(10):
        if job := await worker.next_job():
            break
    assert job is not None, "no job came"
    return await worker.process(job)


async def snapshot(redis: Redis, prefix: str) -> dict[bytes, Any]:
    """Every caller and agent key under ``prefix`` with its value (the queue's keys aside)."""
    state: dict[bytes, Any] = {}
    async for key in redis.scan_iter(match=f"{prefix}:*"):
        if b"{queue}" in key:
            continue
        kind = (await redis.type(key)).decode()
        if kind == "hash":
            state[key] = await redis.hgetall(key)
        elif kind == "list":
            state[key] = await redis.lrange(key, 0, -1)
        elif kind == "zset":
            state[key] = await redis.zrange(key, 0, -1, withscores=True)
        else:
            state[key] = await redis.get(key)
    return state


def subprocess_env(redis_url: str, key_prefix: str, **extra: str) -> dict[str, str]:
    """The environment of a ``runner.py`` subprocess on this test's Redis and prefix."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAPPORT_", "ANTHROPIC_"))}
    # The test's own call history (see tests/conftest.py), not the repository's data folder.
    env["RAPPORT_HISTORY_URL"] = os.environ.get("RAPPORT_HISTORY_URL", "none")
    env.update(REDIS_URL=redis_url, RAPPORT_PEPPER=PEPPER, RAPPORT_KEY_PREFIX=key_prefix, **extra)
    return env


async def run_cli(env: dict[str, str], *args: str, subprocess: bool = True) -> str:
    """Run ``python runner.py ARGS`` from the repository in ``env``; what it printed (exit 0).

    With ``subprocess=False``, the same entry runs in the test process instead (seconds faster:
    ``tests/support/entry.py``), in a thread while the test's event loop goes on.
    """
    if not subprocess:
        result = await asyncio.to_thread(in_this_process, ROOT, args, env)
        assert result.code == 0, result.stderr
        return result.stdout
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "runner.py",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()
