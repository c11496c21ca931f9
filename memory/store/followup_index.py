"""The follow-up index: an agent's calls that need someone to act, most urgent first.

The follow-up list (``python runner.py calls list`` and the dashboard) reads this index, never a
scan of the agent's calls, so its first page costs the same at 100 calls or 100k. Per agent,
under the agent's hash tag:

- ``{prefix}:{agent:A}:followups``: a sorted set of ``callerkey|callid`` scored
  ``urgency * BAND + ended_at``, so a reverse range is most urgent first and newest first within
  an urgency. Calls ended but not analysed yet (or whose analysis failed) sit in band 0, after
  every analysed one; a call whose analysis chose ``none`` (nothing to do) is not listed.
- ``{prefix}:{agent:A}:followups:<action>``: the same, for one action only (the action filter);
  ``{prefix}:{agent:A}:followups:actions`` names the actions that have such a set (a sorted set
  by when each was last chosen).

The index is written by :class:`memory.store.callers.MemoryStore` right after the atomic step that
writes the call record (the agent's keys live in another hash slot than the caller's), and only
when that step changed something, so a replayed analysis cannot bring back a follow-up already
done. Members older than the retention are dropped whenever a set is written or read; members
whose record is gone (forgotten, expired) are dropped when a page meets them. Marking a call done
removes it from every set and keeps who and when beside the caller's call records (``done``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from memory.backend.reply import redis_reply
from memory.models import CallRecord, CallStatus, now, to_ms
from memory.privacy.identity import CallerIdentity
from memory.store.keys import CallRef, KeyLayout, agent_call_member, agent_call_ref

#: Width of one urgency band of the score: epoch seconds stay below it until the year 2286.
BAND = 10_000_000_000
#: Urgencies from most to least urgent; 0 holds calls not analysed (yet).
URGENCIES = (5, 4, 3, 2, 1, 0)
#: The action that means nothing is to be done.
NO_ACTION = "none"


@dataclass(frozen=True, slots=True)
class FollowUpDone:
    """Who marked a follow-up done, and when (epoch seconds)."""

    by: str
    at: float


def urgency_band(record: CallRecord) -> int | None:
    """The band a call is listed in, or None when it needs no follow-up.

    A call cut short by a failing service of ours is the most urgent, whatever its analysis
    says: the caller was promised a call back.
    """
    if record.cut_short:
        return URGENCIES[0]
    if record.status == CallStatus.ANALYSED:
        analysis = record.analysis
        if analysis is None or analysis.action == NO_ACTION:
            return None
        return analysis.urgency
    if record.status in (CallStatus.ENDED, CallStatus.FAILED):
        return 0
    return None


class FollowUpIndex:
    """An agent's follow-ups in Redis (see the module docstring for the layout).

    Args:
        redis: The store's client.
        keys: The store's key layout.
        retention_seconds: How long a call stays listed (0 = no cap).
    """

    def __init__(self, redis: Redis, keys: KeyLayout, *, retention_seconds: int) -> None:
        self._redis = redis
        self._keys = keys
        self._retention = retention_seconds

    def key(self, agent_id: str, action: str | None = None) -> str:
        """The sorted set of an agent's follow-ups, or of those with one action."""
        return self._keys.agent(agent_id, "followups" if action is None else f"followups:{action}")

    def _actions_key(self, agent_id: str) -> str:
        return self._keys.agent(agent_id, "followups:actions")

    def done_key(self, caller: CallerIdentity) -> str:
        """The caller's hash of follow-ups done: call id -> ``{"by": …, "at": …}``."""
        return self._keys.caller(caller, "done")

    def _expire(self, pipe: Any, key: str) -> None:
        if not self._retention:
            return
        cutoff = now() - self._retention
        for band in URGENCIES:
            pipe.zremrangebyscore(key, band * BAND, f"({band * BAND + cutoff!r}")

    def add_to(self, pipe: Any, caller: CallerIdentity, record: CallRecord) -> None:
        """Queue on ``pipe`` what lists (or unlists) a call whose record was just written."""
        member = agent_call_member(caller.key, record.call_id)
        band = urgency_band(record)
        everything = self.key(caller.agent_id)
        if band is None:
            pipe.zrem(everything, member)
            return
        score = band * BAND + (record.ended_at or record.started_at)
        pipe.zadd(everything, {member: score})
        self._expire(pipe, everything)
        if band and record.analysis is not None:
            by_action = self.key(caller.agent_id, record.analysis.action)
            pipe.zadd(by_action, {member: score})
            pipe.zadd(self._actions_key(caller.agent_id), {record.analysis.action: score % BAND})
            self._expire(pipe, by_action)

    async def page(
        self, agent_id: str, *, since: float, action: str | None = None, offset: int = 0, limit: int
    ) -> list[CallRef]:
        """One page of follow-ups that ended since ``since``: most urgent, then newest first.

        Two round trips whatever the index holds: counts per urgency, then the ranges needed.
        """
        key = self.key(agent_id, action)
        pipe = self._redis.pipeline(transaction=False)
        self._expire(pipe, key)
        for band in URGENCIES:
            pipe.zcount(key, band * BAND + since, (band + 1) * BAND - 1)
        replies = await redis_reply(pipe.execute())
        counts = replies[-len(URGENCIES) :]
        pipe = self._redis.pipeline(transaction=False)
        skip, wanted = offset, limit
        for band, count in zip(URGENCIES, counts, strict=True):
            if wanted <= 0:
                break
            if skip >= count:
                skip -= count
                continue
            top, bottom = (band + 1) * BAND - 1, band * BAND + since
            pipe.zrevrangebyscore(key, top, bottom, start=skip, num=wanted)
            wanted -= count - skip
            skip = 0
        ranges = await redis_reply(pipe.execute()) if wanted < limit else []
        return [agent_call_ref(agent_id, member) for members in ranges for member in members]

    async def actions(self, agent_id: str) -> list[str]:
        """The actions some listed call of the agent chose, sorted."""
        names = await redis_reply(self._redis.zrange(self._actions_key(agent_id), 0, -1))
        return sorted(name.decode() for name in names)

    async def remove(self, agent_id: str, members: Sequence[str]) -> None:
        """Unlist calls (``callerkey|callid``) from every follow-up set of the agent."""
        if not members:
            return
        keys = [self.key(agent_id)] + [
            self.key(agent_id, action) for action in await self.actions(agent_id)
        ]
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.zrem(key, *members)
        await redis_reply(pipe.execute())

    async def mark_done(self, caller: CallerIdentity, call_id: str, *, by: str) -> FollowUpDone:
        """Take a call off the list, keeping who did it and when with the caller's records."""
        done = FollowUpDone(by=by, at=to_ms(now()))
        value = json.dumps({"by": done.by, "at": done.at})
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(self.done_key(caller), call_id, value)
        if self._retention:
            pipe.expire(self.done_key(caller), self._retention)
        await redis_reply(pipe.execute())
        await self.remove(caller.agent_id, [agent_call_member(caller.key, call_id)])
        return done

    async def done(self, caller: CallerIdentity, call_id: str) -> FollowUpDone | None:
        """Who marked this call done and when, or None when it was not."""
        raw = await redis_reply(self._redis.hget(self.done_key(caller), call_id))
        if raw is None:
            return None
        data = json.loads(raw)
        return FollowUpDone(by=str(data["by"]), at=float(data["at"]))
