"""The follow-up list after real analyses, and the `calls` and `worker` commands run as a user."""

from __future__ import annotations

from collections.abc import Awaitable

import pytest
from redis.asyncio import Redis

from cli.calls import parse_since
from memory.analysis.followups import follow_ups
from memory.analysis.worker import AnalysisWorker, JobOutcome
from memory.models import now
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue
from tests.fakes.anthropic_server import FakeAnthropic, Reply
from tests.support.worker import (
    AGENT,
    BOB,
    analysed_reply,
    caller,
    hang_up,
    process_next,
    run_cli,
    subprocess_env,
)


async def test_follow_ups_filter_by_action_and_sort_by_urgency(
    store: MemoryStore,
    queue: AnalysisQueue,
    worker: AnalysisWorker,
    fake: FakeAnthropic,
    redis_client: Redis,
    key_prefix: str,
) -> None:
    plan = [
        ("+1 415 555 0001", "call_back", 2),
        ("+1 415 555 0002", "send_quote", 5),
        ("+1 415 555 0003", "call_back", 5),
        ("+1 415 555 0004", "call_back", 4),
    ]
    for i, (number, action, urgency) in enumerate(plan):
        fake.script(analysed_reply(action=action, urgency=urgency))
        await hang_up(store, queue, f"call-{i}", who=caller(number))
        assert await process_next(worker) == JobOutcome.ANALYSED
    fake.script(*[Reply.text("no tool call")] * 3)
    await hang_up(store, queue, "call-failed", who=caller(BOB))
    assert await process_next(worker) == JobOutcome.DEAD
    every = await follow_ups(store, AGENT, since=now() - parse_since("7d"))
    assert [r.call_id for r in every] == ["call-2", "call-1", "call-3", "call-0", "call-failed"]
    call_backs = await follow_ups(store, AGENT, since=now() - 3600, action="call_back")
    assert [r.call_id for r in call_backs] == ["call-2", "call-3", "call-0"]
    assert all(r.masked_number and "•••" in r.masked_number for r in call_backs)
    assert await follow_ups(store, AGENT, since=now() + 60) == []


@pytest.mark.slow
async def test_calls_cli_lists_and_shows_with_masked_numbers(
    store: MemoryStore,
    queue: AnalysisQueue,
    worker: AnalysisWorker,
    fake: FakeAnthropic,
    redis_url: str,
    key_prefix: str,
) -> None:
    fake.script(analysed_reply(action="call_back", urgency=4), analysed_reply(urgency=1))
    who = await hang_up(store, queue, "call-urgent")
    assert await process_next(worker) == JobOutcome.ANALYSED
    await hang_up(store, queue, "call-quote", who=caller(BOB))
    assert await process_next(worker) == JobOutcome.ANALYSED
    fake.script(*[Reply.text("no tool call")] * 3)
    await hang_up(store, queue, "call-dead", who=caller("+1 415 555 0199"))
    assert await process_next(worker) == JobOutcome.DEAD
    # No ANTHROPIC_API_KEY: re-queueing dead letters does not need one.
    env = subprocess_env(redis_url, key_prefix, COLUMNS="200")

    def cli(*args: str) -> Awaitable[str]:
        return run_cli(env, *args, subprocess=False)

    # The first command as a process of its own; the others through the same entry in this one.
    listed = await run_cli(env, "calls", "list", "--agent", AGENT, "--action", "call_back")
    assert "call-urgent" in listed and "call-quote" not in listed
    assert who.masked in listed and "555 0123" not in listed and "5550123" not in listed
    shown = await cli("calls", "show", "call-urgent", "--agent", AGENT)
    assert "My PIN is [pin]." in shown and "4321" not in shown
    assert "Caller orders cakes for Fridays" in shown and "written" in shown
    assert "call_back" in shown
    assert "Queued 1 dead letters again." in await cli("worker", "--retry-dead")
    counts = await queue.counts()
    assert (counts.waiting, counts.dead) == (1, 0)
