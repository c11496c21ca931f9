"""Forget is final, merges never resurrect, and bad records or text never stop a call."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from memory.analysis.settings import AnalysisSettings
from memory.analysis.worker import JobOutcome, analysis_worker
from memory.calls.recorder import CallRecorder
from memory.errors import ForgottenCallerError, MemoryRefusedError
from memory.models import CallRecord, Fact, Turn, now
from memory.privacy.identity import CallerIdentity
from memory.recall.embeddings import HashingEmbedder
from memory.recall.render import fill_template, render_memory
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue
from tests.fakes.anthropic_server import FakeAnthropic
from tests.support.polling import eventually
from tests.support.worker import (
    WAIT_S,
    analysed_reply,
    analysis_settings,
    caller,
    hang_up,
    process_next,
    snapshot,
)


@pytest.fixture
def settings(fake: FakeAnthropic) -> AnalysisSettings:
    return analysis_settings(fake, claim_timeout=1.0)


def _tombstone_only(state: dict[bytes, object]) -> bool:
    # Besides the tombstone, only the pending erasure (a deadline, naming no caller) is left.
    left = [key for key in state if not key.endswith(b":{erasure}:due")]
    return [key.rsplit(b":", 1)[-1] for key in left] == [b"forgotten"]


async def test_a_forget_during_an_in_flight_analysis_is_final(
    store: MemoryStore,
    queue: AnalysisQueue,
    settings: AnalysisSettings,
    fake: FakeAnthropic,
    redis_client: Redis,
    key_prefix: str,
) -> None:
    fake.script(analysed_reply(delay=1.0))
    who = await hang_up(store, queue, "call-1")
    async with analysis_worker(store, queue, settings, embedder=HashingEmbedder()) as worker:
        job = await worker.next_job()
        assert job is not None
        analysing = asyncio.create_task(worker.process(job))
        await eventually(lambda: len(fake.requests) == 1, within=WAIT_S)
        await store.forget(who)
        await queue.forget_caller(who)
        assert await analysing == JobOutcome.MISSING
    await asyncio.sleep(0.2)
    assert _tombstone_only(await snapshot(redis_client, key_prefix))
    assert await store.list_callers("acme") == []
    assert (await store.load(who)).is_empty
    assert (await queue.counts()).waiting == 0


async def test_a_call_in_progress_when_forgotten_is_not_recorded_but_a_new_call_is(
    store: MemoryStore, queue: AnalysisQueue, redis_client: Redis, key_prefix: str
) -> None:
    who = caller()
    recorder = CallRecorder(store=store, queue=queue, caller=who, call_id="before")
    recorder.add_turn("user", "Hi, it's Marta")
    await asyncio.sleep(0.2)
    await store.forget(who)
    await queue.forget_caller(who)
    recorder.add_turn("user", "Remember my cake please")
    with pytest.raises(ForgottenCallerError):
        await store.set_name(who, "Marta", call_started_at=now() - 60)
    recorder.finish("hangup")
    await recorder.wait_closed()
    assert _tombstone_only(await snapshot(redis_client, key_prefix))
    assert await queue.stranded(older_than=0) == []

    # The caller calls again: a new call starts a new memory.
    await asyncio.sleep(0.01)
    again = CallRecorder(store=store, queue=queue, caller=who, call_id="after")
    again.add_turn("user", "Hello again")
    again.finish("hangup")
    await again.wait_closed()
    assert [t.text for t in (await store.load(who)).recent_turns] == ["Hello again"]


async def test_forget_removes_the_callers_jobs_and_dead_letters(
    store: MemoryStore, queue: AnalysisQueue
) -> None:
    alice, bob = caller(), caller("+34 600 123 456")
    await hang_up(store, queue, "a-1", who=alice)
    await hang_up(store, queue, "b-1", who=bob)
    jobs = await queue.read("test", block=0.1, count=10)
    await queue.dead_letter(next(j for j in jobs if j.caller.key == alice.key), "refused")
    await hang_up(store, queue, "a-2", who=alice)

    assert await queue.forget_caller(alice) == 2
    assert [letter.caller.key for letter in await queue.dead_letters()] == []
    assert (await queue.counts()).waiting + (await queue.counts()).pending == 1


async def test_dead_letters_expire_with_retention(redis_client: Redis, key_prefix: str) -> None:
    queue = AnalysisQueue(redis_client, prefix=key_prefix, retention_days=1)
    await redis_client.xadd(
        queue.dead_key, {"agent": "acme"}, id=f"{int(now() * 1000) - 2 * 86_400_000}-0"
    )
    await redis_client.xadd(queue.dead_key, {"agent": "acme"})
    assert await queue.expire_dead() == 1
    assert await redis_client.xlen(queue.dead_key) == 1


class _PausingStore(MemoryStore):
    """A real store whose first facts read waits for a gate: two analyses interleave there."""

    gate: asyncio.Event
    paused: asyncio.Event

    async def facts_with_version(self, caller: CallerIdentity) -> tuple[list[Fact], int]:
        read = await super().facts_with_version(caller)
        if not self.paused.is_set():
            self.paused.set()
            await self.gate.wait()
        return read


async def test_two_interleaved_analyses_leave_one_live_fact_of_a_superseded_pair(
    store: MemoryStore,
    queue: AnalysisQueue,
    settings: AnalysisSettings,
    fake: FakeAnthropic,
    redis_client: Redis,
    key_prefix: str,
) -> None:
    barcelona = Fact(text="Caller lives in Barcelona", confidence=0.9, last_confirmed_at=now() - 99)
    who = caller()
    await store.upsert_facts(who, [barcelona])
    slow = _PausingStore(redis_client, prefix=key_prefix)
    slow.gate, slow.paused = asyncio.Event(), asyncio.Event()
    embedder = HashingEmbedder()
    # Call 1 restates Barcelona; call 2, later, says the caller moved.
    await hang_up(store, queue, "call-1", who=who)
    fake.script(analysed_reply(facts=[{"text": barcelona.text, "confidence": 0.9}]))
    async with analysis_worker(slow, queue, settings, embedder=embedder) as first:
        job = await first.next_job()
        assert job is not None
        analysing = asyncio.create_task(first.process(job))
        await slow.paused.wait()
        await asyncio.sleep(0.01)
        await hang_up(store, queue, "call-2", who=who)
        fake.script(
            analysed_reply(
                facts=[
                    {
                        "text": "Caller moved to Girona",
                        "confidence": 0.9,
                        "supersedes": [barcelona.id],
                    }
                ]
            )
        )
        async with analysis_worker(store, queue, settings, embedder=embedder) as second:
            assert await process_next(second) == JobOutcome.ANALYSED
        slow.gate.set()
        assert await analysing == JobOutcome.ANALYSED
    live = [fact.text for fact in (await store.load(who)).facts]
    assert live == ["Caller moved to Girona"]


async def test_a_profile_with_bad_utf8_still_gives_a_prompt_and_a_greeting(
    store: MemoryStore, redis_client: Redis
) -> None:
    who = caller()
    await store.set_name(who, "Marta")
    profile = store.key_for(who, "profile")
    await redis_client.hset(profile, mapping={"last_summary": b"\xff\xfe broken", "urgency": b"x"})
    await redis_client.hset(store.key_for(who, "facts"), "bad", b"\xc3\x28{")
    await store.upsert_facts(who, [Fact(text="Caller orders cakes")])

    memory = await store.load(who)
    assert memory.profile.name == "Marta" and memory.profile.last_summary is None
    assert [fact.text for fact in memory.facts] == ["Caller orders cakes"]
    prompt = fill_template(
        "You are Rapport.\n{{memory}}",
        render_memory(memory, memory.facts, token_budget=400),
    )
    assert "Marta" in prompt and "{{" not in prompt


async def test_a_turn_with_a_lone_surrogate_is_stored(
    store: MemoryStore, queue: AnalysisQueue
) -> None:
    who = caller()
    recorder = CallRecorder(store=store, queue=queue, caller=who, call_id="call-1")
    recorder.add_turn("user", "I want the \ud83d cake")
    recorder.add_turn("assistant", "Sure")
    recorder.finish("hangup")
    await recorder.wait_closed()
    record = await store.get_call(who, "call-1")
    assert record is not None and record.ended_reason == "hangup"
    assert [turn.text for turn in record.transcript] == ["I want the ? cake", "Sure"]


async def test_a_huge_turn_is_cut_before_it_is_scrubbed(
    store: MemoryStore, queue: AnalysisQueue
) -> None:
    who = caller()
    recorder = CallRecorder(store=store, queue=queue, caller=who, call_id="call-1")
    started = asyncio.get_running_loop().time()
    recorder.add_turn("user", "my card 4111 1111 1111 1111 " * 40_000)
    recorder.finish("hangup")
    await recorder.wait_closed()
    assert asyncio.get_running_loop().time() - started < 0.5
    record = await store.get_call(who, "call-1")
    assert record is not None
    assert len(record.transcript[0].text) <= store.max_text_chars
    assert "4111" not in record.transcript[0].text


async def test_live_facts_are_capped_lowest_value_first(
    redis_client: Redis, key_prefix: str
) -> None:
    store = MemoryStore(redis_client, prefix=key_prefix, max_facts=3)
    who = caller()
    old = [Fact(text=f"Caller fact {i}", last_confirmed_at=now() - 1000 + i) for i in range(3)]
    await store.upsert_facts(who, old)
    unsure = Fact(text="Caller maybe likes tea", confidence=0.3)
    await store.upsert_facts(who, [unsure, Fact(text="Caller fact new")])
    texts = {fact.text for fact in await store.all_facts(who)}
    assert texts == {"Caller fact 1", "Caller fact 2", "Caller fact new"}


async def test_a_script_error_is_not_reported_as_a_timeout(store: MemoryStore) -> None:
    who = caller()
    record = CallRecord(call_id="c", agent_id="acme", ended_at=now())
    bad_store = MemoryStore(store._redis, prefix="x", max_facts=-1)
    bad_store._record_call.script = store._redis.register_script("return redis.call('NOPE')")
    try:
        await bad_store.close_call(who, record)
    except MemoryRefusedError as error:
        assert "did not answer" not in str(error)
    else:
        raise AssertionError("a script error must raise")
    assert Turn  # the module's models stay imported for the other tests
