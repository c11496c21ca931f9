"""Calling callers back: the staff's own phones, and the call backs Rapport itself places.

- :class:`StaffPhones`: the phone a dashboard user entered once, per login name, sealed like a
  caller's number (:mod:`memory.privacy.numbers`, bound to the agent and the name) in the
  agent's ``staff_phones`` hash. A person's *Call back* rings it first.
- :class:`AgentCallbacks`: *Have Rapport call back* on a follow-up. The request is kept under
  the caller's hash tag (``callbacks``: call id -> :class:`AgentCallback`, so a forget erases it)
  and indexed by when it is due in the agent's ``callbacks_due`` sorted set; the bot places the
  call once it is due and the business is open, and keeps the outcome (placed, or why it
  failed) on the request, which the follow-up shows.

Nothing here stores a raw number: the call back is placed on the caller's sealed number.
:func:`reseal_numbers` seals every kept number again under the current number key (the last
step of rotating it, see the README).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from memory.backend.reply import REDIS_FAILURES, classified, redis_reply
from memory.models import now
from memory.privacy.identity import CallerIdentity
from memory.privacy.numbers import NumberVault
from memory.store.codec import parse_one
from memory.store.keys import (
    CallRef,
    KeyLayout,
    agent_call_member,
    agent_call_ref,
    glob_escaped,
)

#: Longest reason a call back opens with ("the burst pipe"), in characters.
MAX_REASON_CHARS = 120
# Replace a hash field only if it still holds the value read (keeping the key's TTL).
_SWAP = """if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) return 1 end
return 0"""


class StaffPhones:
    """The dashboard users' own phones, one per login name, sealed.

    Args:
        redis: An asyncio client.
        numbers: Seals and opens the phones.
        prefix: The store's key prefix.
    """

    def __init__(self, redis: Redis, *, numbers: NumberVault, prefix: str = "rapport") -> None:
        self._redis = redis
        self._numbers = numbers
        self._keys = KeyLayout(prefix)

    @staticmethod
    def bound_to(agent_id: str, user: str) -> str:
        """What a staff phone is sealed to: its agent and login name."""
        return f"staff\x1f{agent_id}\x1f{user}"

    async def set(self, agent_id: str, user: str, e164: str) -> None:
        """Keep ``user``'s phone (E.164) for the call backs they place."""
        sealed = self._numbers.seal(e164, bound_to=self.bound_to(agent_id, user))
        await redis_reply(
            self._redis.hset(self._keys.agent(agent_id, "staff_phones"), user, sealed)
        )

    async def get(self, agent_id: str, user: str) -> str | None:
        """``user``'s phone (E.164), or None when they entered none."""
        sealed = await redis_reply(
            self._redis.hget(self._keys.agent(agent_id, "staff_phones"), user)
        )
        if sealed is None:
            return None
        return self._numbers.open(sealed, bound_to=self.bound_to(agent_id, user))


class CallbackStatus(StrEnum):
    """Where a call back Rapport places stands."""

    QUEUED = "queued"
    PLACED = "placed"
    FAILED = "failed"


class AgentCallback(BaseModel):
    """One follow-up Rapport calls back: who asked, when it is due, what happened.

    Attributes:
        call_id: The follow-up's call.
        requested_by: Who asked (a dashboard user, or ``cli``).
        requested_at: When they asked (epoch).
        due_at: When it is placed at the earliest (the next opening when asked while closed).
        opening: What Rapport says first when the caller answers.
        status: Queued, placed, or failed.
        attempts: Calls tried so far.
        error: Why the last attempt failed (a reason safe to show: never a number).
        call_sid: The placed call's id at the provider.
    """

    call_id: str
    requested_by: str
    requested_at: float = Field(default_factory=now)
    due_at: float
    opening: str
    status: CallbackStatus = CallbackStatus.QUEUED
    attempts: int = 0
    error: str | None = None
    call_sid: str | None = None


class AgentCallbacks:
    """The call backs Rapport places, per caller and follow-up.

    Args:
        redis: An asyncio client.
        prefix: The store's key prefix.
        retention_seconds: How long a call back is kept after its last change (0: no cap),
            the store's retention.
    """

    def __init__(
        self, redis: Redis, *, prefix: str = "rapport", retention_seconds: int = 0
    ) -> None:
        self._redis = redis
        self._keys = KeyLayout(prefix)
        self._retention_seconds = retention_seconds

    def _due_key(self, agent_id: str) -> str:
        return self._keys.agent(agent_id, "callbacks_due")

    async def save(self, caller: CallerIdentity, callback: AgentCallback) -> None:
        """Store a call back; a queued one is indexed by when it is due, any other is not."""
        member = agent_call_member(caller.key, callback.call_id)
        pipe = self._redis.pipeline(transaction=False)
        key = self._keys.caller(caller, "callbacks")
        pipe.hset(key, callback.call_id, callback.model_dump_json())
        if self._retention_seconds:
            pipe.expire(key, self._retention_seconds)
        if callback.status == CallbackStatus.QUEUED:
            pipe.zadd(self._due_key(caller.agent_id), {member: callback.due_at})
        else:
            pipe.zrem(self._due_key(caller.agent_id), member)
        await redis_reply(pipe.execute())

    async def get(self, caller: CallerIdentity, call_id: str) -> AgentCallback | None:
        """The call back of one follow-up, or None."""
        raw = await redis_reply(self._redis.hget(self._keys.caller(caller, "callbacks"), call_id))
        return None if raw is None else parse_one(AgentCallback, raw, what="call back")

    async def of_caller(self, caller: CallerIdentity) -> dict[str, AgentCallback]:
        """Every call back of one caller, by call id."""
        raw = await redis_reply(self._redis.hgetall(self._keys.caller(caller, "callbacks")))
        found = {
            key.decode(): parse_one(AgentCallback, value, what="call back")
            for key, value in raw.items()
        }
        return {call_id: callback for call_id, callback in found.items() if callback is not None}

    async def due(self, agent_id: str, *, at: float | None = None) -> list[CallRef]:
        """The follow-ups whose call back is due at ``at`` (default now), soonest first."""
        members = await redis_reply(
            self._redis.zrangebyscore(self._due_key(agent_id), "-inf", now() if at is None else at)
        )
        return [agent_call_ref(agent_id, member) for member in members]

    async def claim(self, ref: CallRef) -> bool:
        """Take a due call back off the index for placing; False when another process took it.

        Every bot runs a placer: the one whose claim removes the entry places the call (a
        queued call back saved again, e.g. moved to the next opening, is indexed anew).
        """
        member = agent_call_member(ref.caller_key, ref.call_id)
        return bool(await redis_reply(self._redis.zrem(self._due_key(ref.agent_id), member)))


async def reseal_numbers(redis: Redis, *, numbers: NumberVault, prefix: str = "rapport") -> int:
    """Seal every kept number (callers' and staff phones) again with the current number key.

    Run after putting a new key first in ``RAPPORT_NUMBER_KEY_FILE``: once it is done, the old
    keys can leave the file. A number no key in the file opens is left as it is. Scans the
    keyspace (``SCAN``): an administrator's step, not the call path.

    Returns:
        How many numbers were sealed again.
    """
    resealed = 0
    head = glob_escaped(f"{prefix}:{{")
    try:
        async for key in redis.scan_iter(match=f"{head}*}}:contact", count=1000):
            tag = key.decode().split("{", 1)[1].split("}", 1)[0]
            resealed += await _reseal(redis, numbers, key, {b"number": tag})
        async for key in redis.scan_iter(match=f"{head}agent:*}}:staff_phones", count=1000):
            agent_id = key.decode().split("{agent:", 1)[1].split("}", 1)[0]
            users = await redis_reply(redis.hkeys(key))
            bound = {user: StaffPhones.bound_to(agent_id, user.decode()) for user in users}
            resealed += await _reseal(redis, numbers, key, bound)
    except REDIS_FAILURES as e:
        raise classified(e) from e
    return resealed


async def _reseal(
    redis: Redis, numbers: NumberVault, key: bytes, bound_to: dict[bytes, str]
) -> int:
    """Seal again the fields of one hash (field -> what it is bound to); how many."""
    done = 0
    for field, bound in bound_to.items():
        sealed = await redis_reply(redis.hget(key, field))
        number = numbers.open(sealed, bound_to=bound) if sealed is not None else None
        if number is not None:
            # Only if it is still the value just read: a call may have sealed it anew meanwhile.
            fresh = numbers.seal(number, bound_to=bound)
            if await redis_reply(redis.eval(_SWAP, 1, key, field, sealed, fresh)):
                done += 1
    return done
