"""EndOfCallProcessor through run_test, with its recorder on a real Redis."""

from __future__ import annotations

import asyncio

import pytest
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    LLMContextAssistantTurnFrame,
    LLMContextUserTurnFrame,
    TextFrame,
)
from pipecat.tests.utils import SleepFrame, run_test
from redis.asyncio import Redis

from memory.backend.connect import client_from_url
from memory.calls.recorder import CallRecorder
from memory.models import CallStatus
from memory.privacy.identity import CallerIdentity, identify
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue
from processors.end_of_call import EndOfCallProcessor
from tests.support.values import PEPPER_BYTES as PEPPER


@pytest.fixture
def caller() -> CallerIdentity:
    identity = identify("+1 415 555 0123", agent_id="acme", pepper=PEPPER)
    assert identity is not None
    return identity


def turns() -> list[object]:
    return [
        LLMContextUserTurnFrame(text="Hi, it's Alice.", timestamp=""),
        LLMContextAssistantTurnFrame(text="Hello Alice, how can I help?", timestamp=""),
        LLMContextUserTurnFrame(text="My card is 4111 1111 1111 1111.", timestamp=""),
        LLMContextAssistantTurnFrame(text="Please don't share card numbers.", timestamp=""),
    ]


async def closed(recorder: CallRecorder) -> None:
    async with asyncio.timeout(5):
        await recorder.wait_closed()


async def test_turns_are_stored_in_order_and_the_call_is_queued_once(
    store: MemoryStore, queue: AnalysisQueue, caller: CallerIdentity
) -> None:
    recorder = CallRecorder(store=store, queue=queue, caller=caller, call_id="call-1")
    frames = [*turns(), TextFrame("not a turn")]
    down, _ = await run_test(EndOfCallProcessor(recorder=recorder), frames_to_send=frames)
    assert [type(f) for f in down] == [type(f) for f in frames]  # everything passes on
    await closed(recorder)

    record = await store.get_call(caller, "call-1")
    assert record is not None and record.status == CallStatus.ENDED
    assert record.ended_reason == "ended"
    assert [(t.role, t.text) for t in record.transcript] == [
        ("user", "Hi, it's Alice."),
        ("assistant", "Hello Alice, how can I help?"),
        ("user", "My card is [card]."),  # scrubbed before it is stored
        ("assistant", "Please don't share card numbers."),
    ]
    assert (await queue.counts()).waiting == 1


async def test_a_cancelled_call_is_queued_too(
    store: MemoryStore, queue: AnalysisQueue, caller: CallerIdentity
) -> None:
    recorder = CallRecorder(store=store, queue=queue, caller=caller, call_id="call-2")
    await run_test(
        EndOfCallProcessor(recorder=recorder),
        frames_to_send=[*turns()[:2], SleepFrame(sleep=0.1), CancelFrame(reason="caller hung up")],
        send_end_frame=False,
    )
    await closed(recorder)
    record = await store.get_call(caller, "call-2")
    assert record is not None and record.ended_reason == "cancelled: caller hung up"
    assert len(record.transcript) == 2
    assert (await queue.counts()).waiting == 1


async def test_every_end_path_queues_exactly_once(
    store: MemoryStore, queue: AnalysisQueue, caller: CallerIdentity
) -> None:
    recorder = CallRecorder(store=store, queue=queue, caller=caller, call_id="call-3")
    await run_test(
        EndOfCallProcessor(recorder=recorder),
        frames_to_send=[turns()[0], EndFrame(), SleepFrame(sleep=0.1), CancelFrame()],
        send_end_frame=False,
    )
    await closed(recorder)
    # The same call closed again (e.g. by a second process) is not queued twice either.
    again = CallRecorder(store=store, queue=queue, caller=caller, call_id="call-3")
    again.finish("ended")
    await closed(again)
    assert (await queue.counts()).waiting == 1


async def test_anonymous_caller_passes_frames_and_stores_nothing(
    redis_client: Redis, key_prefix: str
) -> None:
    frames = [*turns()]
    down, _ = await run_test(EndOfCallProcessor(recorder=None), frames_to_send=frames)
    assert len(down) == len(frames)
    assert [key async for key in redis_client.scan_iter(match=f"{key_prefix}:*")] == []


async def test_redis_down_never_blocks_the_call(caller: CallerIdentity) -> None:
    dead = client_from_url("redis://127.0.0.1:1", connect_timeout=0.1, command_timeout=0.1)
    recorder = CallRecorder(
        store=MemoryStore(dead), queue=AnalysisQueue(dead), caller=caller, call_id="call-4"
    )
    down, _ = await run_test(EndOfCallProcessor(recorder=recorder), frames_to_send=turns())
    assert len(down) == 4
    async with asyncio.timeout(10):
        await recorder.wait_closed()  # gives up after bounded retries, without raising
    await dead.aclose()
