"""The follow-up index against a real Redis: order, filters, done, forget and retention."""

from __future__ import annotations

from redis.asyncio import Redis

from memory.analysis.followups import follow_ups, mark_follow_up_done
from memory.models import CallAnalysis, CallRecord, now
from memory.privacy.identity import CallerIdentity, identify
from memory.store.audit import AuditAction, AuditEntry, AuditLog
from memory.store.callers import MemoryStore
from tests.support.values import PEPPER_BYTES as PEPPER

AGENT = "acme"
DAY = 86_400


def caller(i: int) -> CallerIdentity:
    identity = identify(f"+1 415 555 01{i:02d}", agent_id=AGENT, pepper=PEPPER)
    assert identity is not None
    return identity


async def analysed(
    store: MemoryStore, who: CallerIdentity, call_id: str, *, urgency: int, action: str, at: float
) -> None:
    record = CallRecord(call_id=call_id, agent_id=AGENT, started_at=at - 60, ended_at=at)
    assert await store.close_call(who, record)
    analysis = CallAnalysis(
        summary="Asked.", urgency=urgency, action=action, sentiment="neutral", language="en"
    )
    assert await store.record_call(who, record.model_copy(update={"analysis": analysis}))


def ids(records: list[CallRecord]) -> list[str]:
    return [record.call_id for record in records]


async def test_most_urgent_first_newest_first_within_unanalysed_last(store: MemoryStore) -> None:
    t = now() - 3600
    await analysed(store, caller(1), "low", urgency=2, action="call_back", at=t)
    await analysed(store, caller(2), "old-urgent", urgency=5, action="send_quote", at=t + 1)
    await analysed(store, caller(3), "new-urgent", urgency=5, action="call_back", at=t + 2)
    await analysed(store, caller(4), "nothing", urgency=4, action="none", at=t + 3)
    pending = CallRecord(call_id="pending", agent_id=AGENT, started_at=t, ended_at=t + 4)
    assert await store.close_call(caller(5), pending)
    assert ids(await follow_ups(store, AGENT, since=t - 1)) == [
        "new-urgent",
        "old-urgent",
        "low",
        "pending",
    ]
    call_backs = await follow_ups(store, AGENT, since=t - 1, action="call_back")
    assert ids(call_backs) == ["new-urgent", "low"]
    assert ids(await follow_ups(store, AGENT, since=t + 1.5)) == ["new-urgent", "pending"]
    assert await store.followups.actions(AGENT) == ["call_back", "send_quote"]


async def test_pages_run_across_urgencies(store: MemoryStore) -> None:
    t = now() - 3600
    for i in range(9):
        await analysed(store, caller(i), f"c{i}", urgency=1 + i % 3, action="call_back", at=t + i)
    every = ids(await follow_ups(store, AGENT, since=t - 1, limit=100))
    assert every == ["c8", "c5", "c2", "c7", "c4", "c1", "c6", "c3", "c0"]
    pages = [ids(await follow_ups(store, AGENT, since=t - 1, offset=o, limit=4)) for o in (0, 4, 8)]
    assert [call for page in pages for call in page] == every


async def test_a_call_closed_then_analysed_moves_to_its_urgency(store: MemoryStore) -> None:
    t = now() - 60
    who = caller(1)
    record = CallRecord(call_id="c1", agent_id=AGENT, started_at=t, ended_at=t)
    await store.close_call(who, record)
    await analysed(store, caller(2), "c2", urgency=1, action="call_back", at=t - 10)
    assert ids(await follow_ups(store, AGENT, since=t - 100)) == ["c2", "c1"]
    analysis = CallAnalysis(
        summary="Upset.", urgency=4, action="call_back", sentiment="frustrated", language="en"
    )
    await store.record_call(who, record.model_copy(update={"analysis": analysis}))
    assert ids(await follow_ups(store, AGENT, since=t - 100)) == ["c1", "c2"]


async def test_done_leaves_the_list_for_good_and_keeps_who_and_when(store: MemoryStore) -> None:
    t = now() - 60
    who = caller(1)
    await analysed(store, who, "c1", urgency=5, action="call_back", at=t)
    await analysed(store, caller(2), "c2", urgency=3, action="call_back", at=t)
    done = await mark_follow_up_done(store, who, "c1", by="Marta")
    assert ids(await follow_ups(store, AGENT, since=t - 1)) == ["c2"]
    assert ids(await follow_ups(store, AGENT, since=t - 1, action="call_back")) == ["c2"]
    assert await store.followups.done(who, "c1") == done
    assert done.by == "Marta" and abs(done.at - now()) < 5
    # A replayed analysis of the same call changes nothing, so it does not come back.
    record = await store.get_call(who, "c1")
    assert record is not None and not await store.record_call(who, record)
    assert ids(await follow_ups(store, AGENT, since=t - 1)) == ["c2"]


async def test_forget_unlists_every_call_of_the_caller(
    store: MemoryStore, redis_client: Redis, key_prefix: str
) -> None:
    t = now() - 60
    who = caller(1)
    await analysed(store, who, "c1", urgency=5, action="call_back", at=t)
    await analysed(store, who, "c2", urgency=2, action="send_quote", at=t + 1)
    await mark_follow_up_done(store, who, "c2", by="Marta")
    await analysed(store, caller(2), "c3", urgency=3, action="call_back", at=t)
    await store.forget(who)
    assert ids(await follow_ups(store, AGENT, since=t - 1)) == ["c3"]
    for action in ("call_back", "send_quote"):
        members = await redis_client.zrange(store.followups.key(AGENT, action), 0, -1)
        assert all(who.key.encode() not in member for member in members)
    left = [key async for key in redis_client.scan_iter(match=f"{key_prefix}:*{who.key}*")]
    assert left == [store.key_for(who, "forgotten").encode()]  # the tombstone alone


async def test_calls_beyond_retention_are_dropped_from_the_index(
    redis_client: Redis, key_prefix: str
) -> None:
    store = MemoryStore(redis_client, prefix=key_prefix, retention_days=30)
    await analysed(store, caller(1), "old", urgency=5, action="call_back", at=now() - 31 * DAY)
    await analysed(store, caller(2), "new", urgency=1, action="call_back", at=now() - DAY)
    assert ids(await follow_ups(store, AGENT, since=0)) == ["new"]
    for key in (store.followups.key(AGENT), store.followups.key(AGENT, "call_back")):
        assert await redis_client.zrange(key, 0, -1) == [f"{caller(2).key}|new".encode()]


async def test_a_record_gone_from_redis_is_unlisted_when_met(
    store: MemoryStore, redis_client: Redis
) -> None:
    t = now() - 60
    who = caller(1)
    await analysed(store, who, "c1", urgency=5, action="call_back", at=t)
    await redis_client.delete(store.key_for(who, "call:c1"))  # expired with its TTL
    assert await follow_ups(store, AGENT, since=t - 1) == []
    assert await redis_client.zcard(store.followups.key(AGENT)) == 0


async def test_the_audit_list_is_newest_first(redis_client: Redis, key_prefix: str) -> None:
    audit = AuditLog(redis_client, prefix=key_prefix)
    masked = caller(1).masked
    await audit.record(AGENT, AuditEntry(by="Marta", action=AuditAction.FACT_EDITED, caller=masked))
    done = AuditEntry(by="Joan", action=AuditAction.FOLLOW_UP_DONE, call_id="c1")
    await audit.record(AGENT, done)
    entries = await audit.recent(AGENT)
    assert [(e.by, e.action) for e in entries] == [
        ("Joan", AuditAction.FOLLOW_UP_DONE),
        ("Marta", AuditAction.FACT_EDITED),
    ]
    assert entries[1].caller == masked
