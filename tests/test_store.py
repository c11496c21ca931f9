"""MemoryStore against a real Redis: every operation, atomicity, retention, privacy."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from memory.backend.connect import client_from_url
from memory.errors import MemoryUnavailableError
from memory.models import CallAnalysis, CallRecord, CallStatus, ExtractedFact, Fact, Turn, now
from memory.privacy.identity import CallerIdentity, identify
from memory.store.callers import MemoryStore
from tests.support.values import PEPPER_BYTES as PEPPER

ALICE = "+1 415 555 0123"
BOB = "+34 600 123 456"


def caller(number: str, agent: str = "acme") -> CallerIdentity:
    identity = identify(number, agent_id=agent, pepper=PEPPER)
    assert identity is not None
    return identity


def analysed(
    call_id: str, *, at: float, name: str | None = None, summary: str = "Asked."
) -> CallRecord:
    return CallRecord(
        call_id=call_id,
        agent_id="acme",
        started_at=at - 60,
        ended_at=at,
        ended_reason="hangup",
        analysis=CallAnalysis(
            summary=summary,
            urgency=3,
            action="call_back",
            sentiment="frustrated",
            language="en",
            caller_name=name,
            facts=[ExtractedFact(text="Caller is vegetarian", confidence=0.9)],
        ),
    )


async def keys_of(redis: Redis, prefix: str) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=f"{prefix}:*")]


async def test_first_time_caller_loads_empty(store: MemoryStore) -> None:
    memory = await store.load(caller(ALICE))
    assert memory.is_empty and not memory.is_returning


async def test_round_trip_of_a_call(store: MemoryStore) -> None:
    alice = caller(ALICE)
    for i, (role, text) in enumerate([("user", "Hi, it's Alice"), ("assistant", "Hello Alice")]):
        await store.append_turn(alice, Turn(role=role, text=text, call_id="c1", at=now() + i))
    fact = Fact(
        text="Caller is vegetarian", confidence=0.9, source_call_id="c1", embedding=b"\x01\x02\x03"
    )
    low = Fact(text="Caller might like jazz", confidence=0.3, source_call_id="c1")
    record = analysed("c1", at=now(), name="Alice", summary="Booked a table.")
    assert await store.record_call(alice, record, facts=[fact, low])

    memory = await store.load(alice)
    assert memory.profile.name == "Alice"
    assert memory.profile.last_summary == "Booked a table."
    assert memory.profile.last_sentiment == "frustrated"
    assert memory.profile.call_count == 1
    assert memory.profile.masked_number == alice.masked
    assert [f.text for f in memory.facts] == ["Caller is vegetarian"]
    assert memory.facts[0].embedding == b"\x01\x02\x03"
    assert [t.text for t in memory.recent_turns] == ["Hi, it's Alice", "Hello Alice"]

    stored = await store.get_call(alice, "c1")
    assert stored is not None and stored.status == CallStatus.ANALYSED
    assert [t.role for t in stored.transcript] == ["user", "assistant"]
    assert {f["text"] for f in (await store.export(alice))["facts"]} == {
        "Caller is vegetarian",
        "Caller might like jazz",
    }


async def test_record_call_replay_changes_nothing(
    store: MemoryStore, redis_client: Redis, key_prefix: str
) -> None:
    alice = caller(ALICE)
    record = analysed("c1", at=now(), name="Alice")
    assert await store.record_call(alice, record, facts=[Fact(text="Caller is vegetarian")])
    before = await store.export(alice)
    assert not await store.record_call(
        alice, analysed("c1", at=now(), name="Mallory"), facts=[Fact(text="Caller is a fraud")]
    )
    assert await store.export(alice) == before


async def test_close_then_analyse_counts_the_call_once(store: MemoryStore) -> None:
    alice = caller(ALICE)
    at = now()
    ended = CallRecord(call_id="c1", agent_id="acme", ended_at=at, ended_reason="hangup")
    assert await store.close_call(alice, ended)
    assert not await store.close_call(alice, ended)
    assert await store.record_call(alice, analysed("c1", at=at))
    assert not await store.close_call(alice, ended)
    memory = await store.load(alice)
    assert memory.profile.call_count == 1
    record = await store.get_call(alice, "c1")
    assert record is not None and record.status == CallStatus.ANALYSED


async def test_racing_record_calls_lose_no_update(store: MemoryStore) -> None:
    alice = caller(ALICE)
    at = now()
    records = [
        (analysed(f"c{i}", at=at + i), [Fact(text=f"Caller owns dog number {i}")])
        for i in range(20)
    ]
    await asyncio.gather(*(store.record_call(alice, r, facts=f) for r, f in records))
    memory = await store.load(alice)
    assert memory.profile.call_count == 20
    assert len(memory.facts) == 20


async def test_older_analysis_does_not_overwrite_newer_profile(store: MemoryStore) -> None:
    alice = caller(ALICE)
    await store.record_call(alice, analysed("new", at=now(), summary="Newest call."))
    await store.record_call(alice, analysed("old", at=now() - 3600, summary="Older call."))
    assert (await store.load(alice)).profile.last_summary == "Newest call."


async def test_retention_expires_and_filters(redis_client: Redis, key_prefix: str) -> None:
    store = MemoryStore(redis_client, prefix=key_prefix, retention_days=1)
    alice = caller(ALICE)
    stale = Fact(text="Caller used to live in Ohio", last_confirmed_at=now() - 3 * 86400)
    fresh = Fact(text="Caller lives in Reno")
    await store.upsert_facts(alice, [stale, fresh])
    assert [f.text for f in (await store.load(alice)).facts] == ["Caller lives in Reno"]

    keys = await keys_of(redis_client, key_prefix)
    assert keys and all([0 < await redis_client.ttl(k) <= 86400 for k in keys])
    for key in keys:
        await redis_client.pexpire(key, 1)
    await asyncio.sleep(0.05)
    assert (await store.load(alice)).is_empty
    assert await keys_of(redis_client, key_prefix) == []


async def test_forget_removes_one_caller_only(
    store: MemoryStore, redis_client: Redis, key_prefix: str
) -> None:
    alice, bob = caller(ALICE), caller(BOB)
    for who in (alice, bob):
        await store.append_turn(who, Turn(role="user", text="hello", call_id="open-call"))
        await store.record_call(who, analysed("c1", at=now()), facts=[Fact(text="Caller is x")])
        await store.set_value(who, "order", {"id": 42})
    bob_keys = {k for k in await keys_of(redis_client, key_prefix) if bob.key.encode() in k}

    removed = await store.forget(alice)
    assert removed["calls"] == 2 and removed["facts"] == 1 and removed["keys"] > 0
    remaining = await keys_of(redis_client, key_prefix)
    # Only the tombstone stays: its key names the keyed hash, its value is the forget time.
    left = [k for k in remaining if alice.key.encode() in k]
    assert [k.rsplit(b":", 1)[-1] for k in left] == [b"forgotten"]
    assert float(await redis_client.get(left[0])) <= now()
    assert bob_keys <= set(remaining)
    for index in remaining:
        if b"{agent:" in index and await redis_client.type(index) == b"zset":
            assert not [
                m for m in await redis_client.zrange(index, 0, -1) if alice.key.encode() in m
            ]
    assert (await store.load(alice)).is_empty
    assert (await store.load(bob)).profile.call_count == 1


async def test_agents_cannot_read_each_others_callers(store: MemoryStore) -> None:
    at_acme, at_other = caller(ALICE, "acme"), caller(ALICE, "other-shop")
    await store.record_call(at_acme, analysed("c1", at=now(), name="Alice"))
    assert (await store.load(at_other)).is_empty
    assert await store.list_callers("other-shop") == []
    assert [c.key for c in await store.list_callers("acme")] == [at_acme.key]


async def test_list_callers_pages_by_recency(store: MemoryStore) -> None:
    numbers = [f"+1 415 555 01{i:02d}" for i in range(5)]
    for i, number in enumerate(numbers):
        await store.record_call(caller(number), analysed(f"c{i}", at=now() + i))
    first = await store.list_callers("acme", limit=2)
    rest = await store.list_callers("acme", offset=2, limit=10)
    assert [c.key for c in first] == [caller(n).key for n in reversed(numbers[3:])]
    assert len(rest) == 3
    assert all(c.profile.masked_number for c in first + rest)


async def test_recent_turns_are_bounded(redis_client: Redis, key_prefix: str) -> None:
    store = MemoryStore(redis_client, prefix=key_prefix, recent_exchanges=2)
    alice = caller(ALICE)
    for i in range(9):
        await store.append_turn(alice, Turn(role="user", text=f"turn {i}", call_id="c1"))
    memory = await store.load(alice)
    assert [t.text for t in memory.recent_turns] == [f"turn {i}" for i in range(5, 9)]
    record = await store.get_call(alice, "c1")
    assert record is not None and len(record.transcript) == 9
    assert record.status == CallStatus.OPEN
    assert [r.call_id for r in await store.open_calls("acme", idle_for=0)] == ["c1"]


async def test_key_value_memory(store: MemoryStore) -> None:
    alice = caller(ALICE)
    assert await store.get_value(alice, "plan") is None
    await store.set_value(alice, "plan", {"tier": "gold"})
    await store.set_value(alice, "visits", 3)
    assert await store.get_value(alice, "plan") == {"tier": "gold"}
    assert await store.items(alice) == {"plan": {"tier": "gold"}, "visits": 3}
    assert await store.delete_value(alice, "plan")
    assert not await store.delete_value(alice, "plan")
    assert (await store.export(alice))["values"] == {"visits": 3}


async def test_corrupt_stored_values_are_skipped_not_lost(
    store: MemoryStore, redis_client: Redis, key_prefix: str
) -> None:
    alice = caller(ALICE)
    await store.upsert_facts(alice, [Fact(text="Caller is vegetarian")])
    facts_key = store.key_for(alice, "facts")
    await redis_client.hset(facts_key, "garbage", b"{not json")
    assert [f.text for f in (await store.load(alice)).facts] == ["Caller is vegetarian"]
    assert await redis_client.hget(facts_key, "garbage") == b"{not json"


async def test_dead_redis_raises_memory_unavailable() -> None:
    dead = client_from_url("redis://127.0.0.1:1", connect_timeout=0.1, command_timeout=0.1)
    store = MemoryStore(dead)
    with pytest.raises(MemoryUnavailableError):
        await store.load(caller(ALICE))
    await dead.aclose()


async def test_find_and_list_recent_calls(store: MemoryStore) -> None:
    alice = caller(ALICE)
    await store.record_call(alice, analysed("call-123", at=now()))
    ref = await store.find_call("acme", "call-123")
    assert ref is not None and ref.caller_key == alice.key
    assert await store.find_call("acme", "nope") is None
    assert [r.call_id for r in await store.recent_calls("acme", since=now() - 60)] == ["call-123"]


@pytest.mark.parametrize("pattern_like", ["*", "call-?", "call-[12]", "call-\\*", "a|b*"])
async def test_find_call_matches_the_id_literally(store: MemoryStore, pattern_like: str) -> None:
    alice = caller(ALICE)
    for call_id in ("call-1", "call-2", "call-\\x", "a|bc"):
        await store.record_call(alice, analysed(call_id, at=now()))
    assert await store.find_call("acme", pattern_like) is None
    await store.record_call(alice, analysed(pattern_like, at=now()))
    ref = await store.find_call("acme", pattern_like)
    assert ref is not None and ref.call_id == pattern_like
