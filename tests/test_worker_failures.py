"""The analysis worker when things go wrong: real Redis, the fake Anthropic API, real processes.

Malformed and overloaded LLM answers, dead letters, killed worker and bot processes, the
sweeper, several workers on one queue, a missing API key.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import pytest
from loguru import logger
from pydantic import SecretStr

from memory.analysis.analyzer import TOOL_NAME
from memory.analysis.worker import ABANDONED, AnalysisWorker, JobOutcome
from memory.metrics import REGISTRY
from memory.models import CallRecord, CallStatus, Turn, now
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue
from memory.upstream import UPSTREAM, Service
from tests.fakes.anthropic_server import ErrorReply, FakeAnthropic, Reply
from tests.support.analysis_answers import answer
from tests.support.polling import eventually
from tests.support.values import API_KEY, PEPPER
from tests.support.worker import (
    AGENT,
    ROOT,
    WAIT_S,
    WorkerFactory,
    analysed_reply,
    caller,
    hang_up,
    process_next,
    subprocess_env,
)

# -- LLM failures ----------------------------------------------------------------------------------


async def test_malformed_then_valid_answer_is_retried_once_and_stored(
    store: MemoryStore, queue: AnalysisQueue, worker: AnalysisWorker, fake: FakeAnthropic
) -> None:
    fake.script(Reply.tool_call(TOOL_NAME, answer(urgency=9)), analysed_reply())
    who = await hang_up(store, queue, "call-1")

    assert await process_next(worker) == JobOutcome.ANALYSED

    assert len(fake.requests) == 2
    record = await store.get_call(who, "call-1")
    assert record is not None and record.status == CallStatus.ANALYSED
    assert record.error is None


async def test_always_malformed_goes_to_dead_letters_keeping_record_and_transcript(
    store: MemoryStore, queue: AnalysisQueue, worker: AnalysisWorker, fake: FakeAnthropic
) -> None:
    fake.script(*[Reply.text("Sorry, I cannot call tools today.")] * 3)
    who = await hang_up(store, queue, "call-1")

    assert await process_next(worker) == JobOutcome.DEAD

    assert len(fake.requests) == 3  # the first answer and max_invalid_retries=2 retries
    record = await store.get_call(who, "call-1")
    assert record is not None and record.status == CallStatus.FAILED
    assert record.error is not None and TOOL_NAME in record.error
    assert [turn.role for turn in record.transcript] == ["assistant", "user", "assistant"]
    assert record.transcript[1].text.startswith("Hi, it's Marta.")
    assert "4321" not in record.transcript[1].text  # scrubbed before the analysis was tried
    assert record.ended_reason == "hangup"
    [letter] = await queue.dead_letters()
    assert (letter.call_id, letter.caller.masked) == ("call-1", who.masked)
    assert letter.reason == record.error
    counts = await queue.counts()
    assert (counts.waiting, counts.pending, counts.dead) == (0, 0, 1)
    assert (await store.load(who)).profile.last_summary is None

    # `worker --retry-dead`: queued again; this time the LLM answers.
    assert await queue.retry_dead() == 1
    counts = await queue.counts()
    assert (counts.waiting, counts.dead) == (1, 0)
    fake.script(analysed_reply())
    assert await process_next(worker) == JobOutcome.ANALYSED
    record = await store.get_call(who, "call-1")
    assert record is not None and record.status == CallStatus.ANALYSED
    assert record.error is None
    assert (await store.load(who)).profile.call_count == 1


async def test_overloaded_and_rate_limited_answers_back_off_then_succeed(
    store: MemoryStore, queue: AnalysisQueue, worker: AnalysisWorker, fake: FakeAnthropic
) -> None:
    fake.script(
        ErrorReply.overloaded(),
        # A long retry-after is honoured only up to backoff_max (0.05 s here).
        ErrorReply.rate_limited(retry_after=30),
        ErrorReply.server_error(),
        analysed_reply(),
    )
    who = await hang_up(store, queue, "call-1")

    assert await process_next(worker) == JobOutcome.ANALYSED

    assert len(fake.requests) == 4
    assert (await store.load(who)).profile.name == "Marta"


async def test_an_llm_that_stays_overloaded_dead_letters_the_call(
    store: MemoryStore, queue: AnalysisQueue, worker: AnalysisWorker, fake: FakeAnthropic
) -> None:
    fake.script(*[ErrorReply.overloaded()] * 4)
    who = await hang_up(store, queue, "call-1")

    assert await process_next(worker) == JobOutcome.DEAD

    assert len(fake.requests) == 4  # the first try and max_retries=3 retries
    [letter] = await queue.dead_letters()
    assert "529" in letter.reason
    record = await store.get_call(who, "call-1")
    assert record is not None and record.status == CallStatus.FAILED
    assert len(record.transcript) == 3


async def test_a_refused_key_dead_letters_with_its_reason_and_names_the_variable_once(
    store: MemoryStore, queue: AnalysisQueue, make_worker: WorkerFactory, fake: FakeAnthropic
) -> None:
    UPSTREAM.succeeded(Service.ANALYSIS_LLM)  # whatever earlier tests left
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO")
    try:
        async with make_worker(api_key=SecretStr("a-stale-key")) as stale:
            for call_id in ("call-1", "call-2"):
                await hang_up(store, queue, call_id)
                assert await process_next(stale) == JobOutcome.DEAD
    finally:
        logger.remove(sink)

    assert len(fake.requests) == 2  # a refused key is not retried
    letters = await queue.dead_letters()
    assert {letter.reason for letter in letters} == {
        "the LLM refused the request: HTTP 401 (authentication_error)"
    }
    named = [line for line in lines if "check ANTHROPIC_API_KEY" in line]
    assert named == [
        "The analysis LLM refused the key: check ANTHROPIC_API_KEY (later failures are counted "
        "in rapport_service_errors_total)"
    ]
    dead = [line for line in lines if "dead-lettered" in line]
    assert len(dead) == 2 and all(line.endswith("HTTP 401 (authentication_error)") for line in dead)
    assert UPSTREAM.refused() == {"analysis_llm": "refused the key: check ANTHROPIC_API_KEY"}
    counted = REGISTRY.get_sample_value(
        "rapport_service_errors_total", {"service": "analysis_llm", "kind": "auth"}
    )
    assert counted is not None and counted >= 2

    # The right key: the next analysis succeeds, and the refusal is no longer current.
    fake.script(analysed_reply())
    async with make_worker() as fixed:
        await hang_up(store, queue, "call-3")
        assert await process_next(fixed) == JobOutcome.ANALYSED
    assert UPSTREAM.refused() == {}


# -- crashes ---------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_worker_process_killed_mid_job_is_replaced_and_the_call_analysed_once(
    store: MemoryStore,
    queue: AnalysisQueue,
    make_worker: WorkerFactory,
    fake: FakeAnthropic,
    redis_url: str,
    key_prefix: str,
) -> None:
    # The first worker's LLM answer takes long enough for it to be killed while it waits.
    fake.script(analysed_reply(delay=30), analysed_reply())
    who = await hang_up(store, queue, "call-1")
    env = subprocess_env(
        redis_url,
        key_prefix,
        ANTHROPIC_API_KEY=API_KEY,
        ANTHROPIC_BASE_URL=fake.base_url,
        RAPPORT_ANALYSIS_CLAIM_TIMEOUT="1",
        RAPPORT_ANALYSIS_SWEEP_INTERVAL="600",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "runner.py",
        "worker",
        "--concurrency",
        "1",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await eventually(lambda: len(fake.requests) == 1, within=WAIT_S)
        assert (await queue.counts()).pending == 1
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()

    async with make_worker() as survivor:
        job = None
        while job is None:  # claimable once the dead worker's claim is a second old
            job = await survivor.next_job()
        assert job.deliveries == 2
        assert await survivor.process(job) == JobOutcome.ANALYSED

    assert len(fake.requests) == 2
    memory = await store.load(who)
    assert memory.profile.call_count == 1
    assert [fact.text for fact in memory.facts] == ["Caller orders cakes for Fridays"]
    record = await store.get_call(who, "call-1")
    assert record is not None and record.status == CallStatus.ANALYSED
    counts = await queue.counts()
    assert (counts.waiting, counts.pending, counts.dead) == (0, 0, 0)


_BOT = """
import asyncio, sys
from memory.backend.connect import client_from_url
from memory.recall.embeddings import HashingEmbedder, compact_matches
from memory.privacy.identity import identify
from memory.models import Turn
from memory.store.callers import MemoryStore

async def main(url, prefix, pepper):
    store = MemoryStore(client_from_url(url, connect_timeout=2, command_timeout=5), prefix=prefix)
    caller = identify("+1 415 555 0123", agent_id="acme", pepper=pepper.encode())
    for role, text in [("assistant", "Bella's Bakery, how can I help?"),
                       ("user", "I'd like to book a table for four on Saturday.")]:
        await store.append_turn(caller, Turn(role=role, text=text, call_id="died-mid-call"))
    print("in call", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.slow
async def test_a_bot_killed_mid_call_has_its_turns_analysed_after_the_idle_timeout(
    store: MemoryStore,
    worker: AnalysisWorker,
    fake: FakeAnthropic,
    redis_url: str,
    key_prefix: str,
) -> None:
    fake.script(analysed_reply(action="book_appointment", summary="Booking for four."))
    bot = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _BOT,
        redis_url,
        key_prefix,
        PEPPER,
        cwd=ROOT,
        env=subprocess_env(redis_url, key_prefix),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert bot.stdout is not None
        assert await asyncio.wait_for(bot.stdout.readline(), timeout=20) == b"in call\n"
    finally:
        bot.send_signal(signal.SIGKILL)
        await bot.wait()
    who = caller()

    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))

    async def analysed() -> bool:
        record = await store.get_call(who, "died-mid-call")
        return record is not None and record.status == CallStatus.ANALYSED

    try:
        await eventually(analysed, within=WAIT_S)
    finally:
        stop.set()
        await running

    record = await store.get_call(who, "died-mid-call")
    assert record is not None and record.ended_reason == ABANDONED
    assert record.ended_at == record.transcript[-1].at
    assert "table for four" in json.dumps(fake.requests[0].body)
    assert await store.open_calls(AGENT, idle_for=0) == []
    assert (await store.load(who)).profile.last_action == "book_appointment"


async def test_a_hang_up_whose_process_died_before_queueing_is_finished_by_the_sweeper(
    store: MemoryStore, queue: AnalysisQueue, make_worker: WorkerFactory, fake: FakeAnthropic
) -> None:
    who = caller()
    await store.append_turn(who, Turn(role="user", text="Call me back.", call_id="stranded"))
    # end_call's first two steps, then the process died before queueing.
    await queue.note_closing(who, "stranded")
    record = CallRecord(call_id="stranded", agent_id=AGENT, ended_at=now(), ended_reason="hangup")
    assert await store.close_call(who, record)
    fake.script(analysed_reply(action="call_back"))

    async with make_worker(claim_timeout=0.2) as worker:

        async def queued_once() -> bool:
            return await worker.sweep() == 1

        await eventually(queued_once, within=WAIT_S)
        assert await worker.sweep() == 0  # finished: nothing left to queue
        assert await process_next(worker) == JobOutcome.ANALYSED

    stored = await store.get_call(who, "stranded")
    assert stored is not None and stored.ended_reason == "hangup"
    assert stored.status == CallStatus.ANALYSED


async def test_several_workers_share_the_queue_and_analyse_each_call_once(
    store: MemoryStore, queue: AnalysisQueue, make_worker: WorkerFactory, fake: FakeAnthropic
) -> None:
    calls = 12
    fake.script(*[analysed_reply(delay=0.05) for _ in range(calls)])
    for i in range(calls):
        await hang_up(store, queue, f"call-{i}", who=caller(f"+1 415 555 {i:04d}"))

    stop = asyncio.Event()
    async with make_worker() as one, make_worker() as two:
        runs = [asyncio.create_task(one.run(stop)), asyncio.create_task(two.run(stop))]

        async def drained() -> bool:
            counts = await queue.counts()
            return counts.waiting == 0 and counts.pending == 0

        try:
            await eventually(drained, within=WAIT_S)
        finally:
            stop.set()
            await asyncio.gather(*runs)

    assert len(fake.requests) == calls
    for i in range(calls):
        record = await store.get_call(caller(f"+1 415 555 {i:04d}"), f"call-{i}")
        assert record is not None and record.status == CallStatus.ANALYSED


# -- starting --------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_the_worker_refuses_to_start_without_an_api_key(
    redis_url: str, key_prefix: str
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "runner.py",
        "worker",
        cwd=ROOT,
        env=subprocess_env(redis_url, key_prefix, ANTHROPIC_API_KEY=""),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    assert process.returncode == 2
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and "ANTHROPIC_API_KEY" in lines[0]
