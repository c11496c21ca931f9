"""Caller memory in Redis: profile, facts, recent turns, call records and key-value memory.

Every key of one caller carries one hash tag, ``{agent:callerkey}``, so multi-key updates run
atomically (a Lua script or MULTI/EXEC) and the same code runs on Redis Cluster. Agent-wide
indexes (callers, calls, open calls) live under the agent's own tag and are updated next to,
not inside, the caller's atomic step: they are idempotent and only ever point at caller data.

The client is injected and must be created with ``decode_responses=False`` (embeddings are
binary). Redis failures surface as :class:`MemoryUnavailableError`; stored values that fail
validation are skipped with a warning and left in place, never overwritten.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from loguru import logger
from pydantic import BaseModel, TypeAdapter, ValidationError
from redis.asyncio import Redis

from memory.coalesce import ReadCoalescer
from memory.errors import REDIS_FAILURES, MemoryUnavailableError, redis_reply
from memory.followups import FollowUpIndex
from memory.identity import CallerIdentity
from memory.keys import CallRef, KeyLayout, agent_call_member, agent_call_ref, glob_escaped
from memory.models import (
    CallerMemory,
    CallerProfile,
    CallRecord,
    CallStatus,
    Fact,
    Turn,
    now,
)

#: Turns kept per call transcript; a runaway call cannot grow a record without bound.
MAX_TRANSCRIPT_TURNS = 2000
_DAY = 86_400

_M = TypeVar("_M", bound=BaseModel)
# One validation call per list instead of one per item: most of a load's CPU is parsing.
_LIST_ADAPTERS: dict[type[BaseModel], TypeAdapter[Any]] = {
    Fact: TypeAdapter(list[Fact]),
    Turn: TypeAdapter(list[Turn]),
}

# Lua: refresh the TTL of every key of the script that exists (``ttl`` set by the script).
_REFRESH_TTLS = """if ttl > 0 then
  for _, key in ipairs(KEYS) do
    if redis.call('EXISTS', key) == 1 then redis.call('EXPIRE', key, ttl) end
  end
end
"""

# Writes a call record and the profile/fact changes it implies, once per call id and mode.
# KEYS: profile, facts, embeddings, calls, record, call states, call turns, turns, kv
# ARGV: call_id, mode, record json, at, ttl, masked, n_profile, (field, value)*n, n_facts,
#       (id, json, embedding)*n_facts
_RECORD_CALL = (
    """
local call_id, mode, at = ARGV[1], ARGV[2], tonumber(ARGV[4])
local state = redis.call('HGET', KEYS[6], call_id)
if state == 'analysed' or (state == 'closed' and mode == 'close') then return 0 end
if not state then
  redis.call('HINCRBY', KEYS[1], 'call_count', 1)
  local first = tonumber(redis.call('HGET', KEYS[1], 'first_seen') or '')
  if not first or at < first then redis.call('HSET', KEYS[1], 'first_seen', ARGV[4]) end
  local last = tonumber(redis.call('HGET', KEYS[1], 'last_seen') or '0')
  if at > last then redis.call('HSET', KEYS[1], 'last_seen', ARGV[4]) end
end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'masked_number', ARGV[6]) end
redis.call('SET', KEYS[5], ARGV[3])
redis.call('ZADD', KEYS[4], at, call_id)
local i = 8
local n_profile = tonumber(ARGV[7])
redis.call('HSET', KEYS[6], call_id, mode == 'analyse' and 'analysed' or 'closed')
if mode == 'analyse' then
  local analysed_at = tonumber(redis.call('HGET', KEYS[1], 'last_analysed_at') or '0')
  if at >= analysed_at and n_profile > 0 then
    redis.call('HSET', KEYS[1], 'last_analysed_at', ARGV[4], unpack(ARGV, i, i + 2 * n_profile - 1))
  end
end
i = i + 2 * n_profile
local n_facts = tonumber(ARGV[i])
for j = 1, n_facts do
  local base = i + (j - 1) * 3
  redis.call('HSET', KEYS[2], ARGV[base + 1], ARGV[base + 2])
  if ARGV[base + 3] ~= '' then redis.call('HSET', KEYS[3], ARGV[base + 1], ARGV[base + 3]) end
end
local ttl = tonumber(ARGV[5])
"""
    + _REFRESH_TTLS
    + """return 1
"""
)

# Rewrites changed turns of one call's transcript, and the same turns among the recent turns
# (stored with the same JSON), so a scrubbed transcript leaves no copy of what it replaced.
# KEYS: call turns, recent turns. ARGV: (index, turn json)*
_REPLACE_TURNS = """
for i = 1, #ARGV, 2 do
  local index = tonumber(ARGV[i])
  local before = redis.call('LINDEX', KEYS[1], index)
  if before and before ~= ARGV[i + 1] then
    redis.call('LSET', KEYS[1], index, ARGV[i + 1])
    local recent = redis.call('LPOS', KEYS[2], before)
    if recent then redis.call('LSET', KEYS[2], recent, ARGV[i + 1]) end
  end
end
return 1
"""

# Marks a stored call record failed unless the call was analysed meanwhile. A missing record
# (forgotten or expired caller) is not recreated.
# KEYS: call states, record. ARGV: call_id, record json
_MARK_FAILED = """
if redis.call('HGET', KEYS[1], ARGV[1]) == 'analysed' then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'KEEPTTL')
return 1
"""

# Stores embeddings of facts that still exist (a fact forgotten meanwhile gets none back).
# KEYS: facts, embeddings. ARGV: ttl, (fact id, embedding)*
_SET_EMBEDDINGS = """
local stored = 0
for i = 2, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    stored = stored + 1
  end
end
local ttl = tonumber(ARGV[1])
if stored > 0 and ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
return stored
"""


# Appends turns to their call's transcript and to the recent turns, atomically.
# KEYS: call turns, recent turns, profile. ARGV: transcript cap, recent cap, masked, ttl, turns...
_APPEND_TURNS = (
    """
local turns = {unpack(ARGV, 5)}
redis.call('RPUSH', KEYS[1], unpack(turns))
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local recent = tonumber(ARGV[2])
if recent > 0 then
  redis.call('RPUSH', KEYS[2], unpack(turns))
  redis.call('LTRIM', KEYS[2], -recent, -1)
end
redis.call('HSET', KEYS[3], 'masked_number', ARGV[3])
local ttl = tonumber(ARGV[4])
"""
    + _REFRESH_TTLS
)

# Sets hash fields across a caller's hashes and refreshes their TTL, atomically.
# (MULTI/EXEC would do, but redis-py's asyncio cluster transactions break the connection after.)
# KEYS: the hashes. ARGV: ttl, then (key index, field, value) triples.
_HSET_ALL = """
for i = 2, #ARGV, 3 do redis.call('HSET', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2]) end
local ttl = tonumber(ARGV[1])
if ttl > 0 then for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, ttl) end end
"""


@dataclass(frozen=True, slots=True)
class CallerSummary:
    """One row of :meth:`MemoryStore.list_callers`."""

    key: str
    profile: CallerProfile


class MemoryStore:
    """Reads and writes caller memory in Redis.

    Args:
        redis: An asyncio client created with ``decode_responses=False``.
        prefix: First segment of every key; tests use a unique one per test.
        retention_days: How long memory is kept and retrieved (0 = no cap).
        recent_exchanges: Exchanges (a caller turn and an agent turn) kept for continuity.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "rapport",
        retention_days: int = 90,
        recent_exchanges: int = 10,
    ) -> None:
        self._redis = redis
        self._keys = KeyLayout(prefix)
        self._retention_days = retention_days
        self._recent_turns = 2 * recent_exchanges
        self._record_call = redis.register_script(_RECORD_CALL)
        self._append_turns = redis.register_script(_APPEND_TURNS)
        self._reads = ReadCoalescer(redis)
        self._hset_all = redis.register_script(_HSET_ALL)
        self._replace_turns = redis.register_script(_REPLACE_TURNS)
        self._mark_failed = redis.register_script(_MARK_FAILED)
        self._set_embeddings = redis.register_script(_SET_EMBEDDINGS)
        self.followups = FollowUpIndex(redis, self._keys, retention_seconds=self.ttl_seconds)

    @property
    def ttl_seconds(self) -> int:
        """TTL refreshed on every write, 0 when retention is unbounded."""
        return self._retention_days * _DAY

    def key_for(self, caller: CallerIdentity, part: str) -> str:
        """The Redis key of one part (``profile``, ``facts``, …) of a caller's memory."""
        return self._keys.caller(caller, part)

    # -- helpers ----------------------------------------------------------------------------

    def _cutoff(self) -> float:
        return now() - self.ttl_seconds if self.ttl_seconds else float("-inf")

    @staticmethod
    def _parse(model: type[_M], raw: bytes | str, *, what: str) -> _M | None:
        try:
            return model.model_validate_json(raw)
        except ValidationError:
            logger.warning("Skipping a stored {} that failed validation", what)
            return None

    @classmethod
    def _parse_all(cls, model: type[_M], raws: Sequence[bytes], *, what: str) -> list[_M | None]:
        """Validate many stored values in one call (one per value only if some are bad).

        Returns:
            One entry per raw value, None where it failed validation.
        """
        try:
            return _LIST_ADAPTERS[model].validate_json(b"[" + b",".join(raws) + b"]")
        except ValidationError:
            return [cls._parse(model, raw, what=what) for raw in raws]

    @staticmethod
    def _profile(raw: dict[bytes, bytes]) -> CallerProfile:
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        try:
            return CallerProfile.model_validate(fields)
        except ValidationError:
            logger.warning("Stored caller profile failed validation; using an empty one")
            return CallerProfile()

    def _facts(self, raw: dict[bytes, bytes], embeddings: dict[bytes, bytes]) -> list[Fact]:
        ids = list(raw)
        # The id is the hash field, not in the stored JSON: splice it in (cheaper than hashing
        # the text again). A malformed value fails the batch and is skipped one by one.
        payloads = [b'{"id":"' + fact_id + b'",' + raw[fact_id][1:] for fact_id in ids]
        facts = []
        for fact_id, fact in zip(ids, self._parse_all(Fact, payloads, what="fact"), strict=True):
            if fact is not None:
                fact.embedding = embeddings.get(fact_id)
                facts.append(fact)
        return facts

    def _turns(self, raws: Sequence[bytes]) -> list[Turn]:
        return [turn for turn in self._parse_all(Turn, raws, what="turn") if turn is not None]

    # -- the call path ----------------------------------------------------------------------

    async def load(self, caller: CallerIdentity) -> CallerMemory:
        """Load what one call needs about its caller, in one round trip.

        Facts are those within retention, above the confidence floor and not superseded;
        turns are the most recent exchanges within retention.
        """
        keys = self._keys.caller_keys(caller)
        recent = self._recent_turns

        def commands(pipe: Any) -> None:
            pipe.hgetall(keys["profile"])
            pipe.hgetall(keys["facts"])
            pipe.hgetall(keys["emb"])
            pipe.lrange(keys["turns"], -recent, -1) if recent else pipe.lrange(keys["turns"], 1, 0)

        replies = await redis_reply(self._reads(commands, 4))
        profile_raw, facts_raw, emb_raw, turns_raw = replies
        cutoff = self._cutoff()
        facts = [
            fact
            for fact in self._facts(facts_raw, emb_raw)
            if fact.injectable and fact.last_confirmed_at >= cutoff
        ]
        facts.sort(key=lambda fact: fact.last_confirmed_at, reverse=True)
        turns = self._turns(turns_raw)
        return CallerMemory(
            profile=self._profile(profile_raw),
            facts=facts,
            recent_turns=[turn for turn in turns if turn.at >= cutoff],
        )

    async def append_turn(self, caller: CallerIdentity, turn: Turn) -> None:
        """Append one finished turn (see :meth:`append_turns`)."""
        await self.append_turns(caller, [turn])

    async def append_turns(self, caller: CallerIdentity, turns: Sequence[Turn]) -> None:
        """Append finished turns of one call to its transcript and to the recent turns.

        One round trip however many turns. The call is marked open until it is closed or
        analysed, so a call whose bot died mid-call can still be found and analysed.
        """
        if not turns:
            return
        call_id = turns[0].call_id
        if not call_id or any(turn.call_id != call_id for turn in turns):
            raise ValueError("stored turns need the call_id of one call")
        keys = self._keys.caller_keys(caller)
        _, transcript_key = self._keys.call(caller, call_id)
        # The transcript key already names the call; recent turns are told apart by time.
        payloads = [t.model_dump_json(exclude={"call_id"}, exclude_none=True) for t in turns]
        open_calls = self._keys.agent(caller.agent_id, "open")
        member = agent_call_member(caller.key, call_id)
        # Two keys in two slots, sent together (cluster pipelines refuse scripts).
        await redis_reply(
            asyncio.gather(
                self._append_turns(
                    keys=[transcript_key, keys["turns"], keys["profile"]],
                    args=[
                        MAX_TRANSCRIPT_TURNS,
                        self._recent_turns,
                        caller.masked,
                        self.ttl_seconds,
                        *payloads,
                    ],
                ),
                self._redis.zadd(open_calls, {member: turns[-1].at}),
            )
        )

    # -- after the call ---------------------------------------------------------------------

    async def close_call(self, caller: CallerIdentity, record: CallRecord) -> bool:
        """Store a call that just ended (before analysis); counts the call once.

        Returns:
            False when this call id was already closed or analysed (nothing changed).
        """
        ended = record.model_copy(update={"status": CallStatus.ENDED})
        return await self._write_call(caller, ended, ())

    async def record_call(
        self, caller: CallerIdentity, record: CallRecord, *, facts: Sequence[Fact] = ()
    ) -> bool:
        """Store an analysed call: record, profile update and fact upserts in one atomic step.

        Idempotent by call id: replaying an analysed call changes nothing.

        Returns:
            False when this call id was already analysed.
        """
        if record.analysis is None:
            raise ValueError("record_call needs an analysed call record")
        analysed = record.model_copy(update={"status": CallStatus.ANALYSED})
        return await self._write_call(caller, analysed, facts)

    async def _write_call(
        self, caller: CallerIdentity, record: CallRecord, facts: Iterable[Fact]
    ) -> bool:
        keys = self._keys.caller_keys(caller)
        record_key, transcript_key = self._keys.call(caller, record.call_id)
        at = record.ended_at or record.started_at
        profile = _profile_update(record)
        fact_args: list[str | bytes] = []
        for fact in facts:
            fact_args += [fact.id, fact.stored_json(), fact.embedding or b""]
        args: list[str | bytes | int | float] = [
            record.call_id,
            "analyse" if record.status == CallStatus.ANALYSED else "close",
            record.model_dump_json(exclude={"transcript"}, exclude_defaults=True),
            repr(at),
            self.ttl_seconds,
            caller.masked,
            len(profile),
            *[item for pair in profile.items() for item in pair],
            len(fact_args) // 3,
            *fact_args,
        ]
        call_keys = [
            keys["profile"],
            keys["facts"],
            keys["emb"],
            keys["calls"],
            record_key,
            keys["callstate"],
            transcript_key,
            keys["turns"],
            keys["kv"],
        ]
        written = await redis_reply(self._record_call(keys=call_keys, args=args))
        member = agent_call_member(caller.key, record.call_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrem(self._keys.agent(caller.agent_id, "open"), member)
        pipe.zadd(self._keys.agent(caller.agent_id, "callers"), {caller.key: at}, gt=True)
        pipe.zadd(self._keys.agent(caller.agent_id, "calls"), {member: at})
        if written:
            self.followups.add_to(pipe, caller, record)
        await redis_reply(pipe.execute())
        return bool(written)

    async def upsert_facts(self, caller: CallerIdentity, facts: Sequence[Fact]) -> None:
        """Store facts at once (the ``remember`` tool), outside any call record."""
        fields: list[tuple[int, str, str | bytes]] = []
        for fact in facts:
            fields.append((1, fact.id, fact.stored_json()))
            if fact.embedding:
                fields.append((2, fact.id, fact.embedding))
        await self._hset(caller, ["facts", "emb"], fields)

    async def _hset(
        self, caller: CallerIdentity, parts: list[str], fields: list[tuple[int, str, str | bytes]]
    ) -> None:
        """Set fields (1-based index into ``parts``, field, value) and refresh the TTLs."""
        if not fields:
            return
        args: list[str | bytes | int] = [self.ttl_seconds]
        for index, field, value in fields:
            args += [index, field, value]
        keys = [self.key_for(caller, part) for part in parts]
        await redis_reply(self._hset_all(keys=keys, args=args))

    async def delete_facts(self, caller: CallerIdentity, fact_ids: Sequence[str]) -> None:
        """Delete facts and their embeddings (ids not stored are ignored)."""
        if fact_ids:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hdel(self.key_for(caller, "facts"), *fact_ids)
            pipe.hdel(self.key_for(caller, "emb"), *fact_ids)
            await redis_reply(pipe.execute())

    async def set_embeddings(self, caller: CallerIdentity, embeddings: dict[str, bytes]) -> int:
        """Store the embeddings of existing facts, by fact id, leaving the facts as they are.

        Returns:
            How many were stored (ids of facts no longer stored are skipped).
        """
        if not embeddings:
            return 0
        keys = [self.key_for(caller, "facts"), self.key_for(caller, "emb")]
        args: list[str | bytes | int] = [self.ttl_seconds]
        for fact_id, embedding in embeddings.items():
            args += [fact_id, embedding]
        return int(await redis_reply(self._set_embeddings(keys=keys, args=args)))

    async def set_name(self, caller: CallerIdentity, name: str) -> None:
        """Store the caller's name as they gave it during a call."""
        await self._hset(
            caller, ["profile"], [(1, "name", name), (1, "masked_number", caller.masked)]
        )

    async def get_call(self, caller: CallerIdentity, call_id: str) -> CallRecord | None:
        """One call record with its transcript, or None if unknown (or expired)."""
        record_key, transcript_key = self._keys.call(caller, call_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(record_key)
        pipe.lrange(transcript_key, 0, -1)
        raw, turns_raw = await redis_reply(pipe.execute())
        if raw is None and not turns_raw:
            return None
        turns = [t.model_copy(update={"call_id": call_id}) for t in self._turns(turns_raw)]
        if raw is None:
            # Turns without a record: the call never ended (its bot died mid-call).
            return CallRecord(
                call_id=call_id,
                agent_id=caller.agent_id,
                status=CallStatus.OPEN,
                started_at=turns[0].at if turns else now(),
                transcript=turns,
                masked_number=caller.masked,
            )
        record = self._parse(CallRecord, raw, what="call record")
        return record.model_copy(update={"transcript": turns}) if record else None

    async def call_records(self, refs: Sequence[CallRef]) -> list[CallRecord | None]:
        """The records of many calls without their transcripts, in one round trip.

        Returns:
            One entry per reference, None where the call is not stored (or fails validation).
        """
        pipe = self._redis.pipeline(transaction=False)
        for ref in refs:
            pipe.get(self._keys.call(ref.caller, ref.call_id)[0])
        raws = await redis_reply(pipe.execute()) if refs else []
        return [
            self._parse(CallRecord, raw, what="call record") if raw is not None else None
            for raw in raws
        ]

    async def all_facts(self, caller: CallerIdentity) -> list[Fact]:
        """Every stored fact of a caller, superseded and low-confidence ones included."""
        keys = self._keys.caller_keys(caller)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(keys["facts"])
        pipe.hgetall(keys["emb"])
        facts_raw, emb_raw = await redis_reply(pipe.execute())
        return self._facts(facts_raw, emb_raw)

    async def open_calls(self, agent_id: str, *, idle_for: float) -> list[CallRef]:
        """Calls with turns but no end, idle for at least ``idle_for`` seconds."""
        members = await redis_reply(
            self._redis.zrangebyscore(self._keys.agent(agent_id, "open"), "-inf", now() - idle_for)
        )
        return [agent_call_ref(agent_id, member) for member in members]

    async def agents_with_open_calls(self) -> list[str]:
        """Agents with at least one call that has turns but no end.

        Scans the keyspace (``SCAN``, never ``KEYS``): meant for a periodic sweeper, not the
        call path.
        """
        pattern, prefix = self._keys.agent_pattern("open")
        agents: set[str] = set()
        try:
            async for key in self._redis.scan_iter(match=pattern, count=1000, _type="ZSET"):
                agents.add(key.decode()[len(prefix) : -len("}:open")])
        except REDIS_FAILURES as e:
            raise MemoryUnavailableError("Redis did not answer") from e
        return sorted(agents)

    async def caller_of(self, ref: CallRef) -> CallerIdentity:
        """The caller of a call reference, with the masked number their profile keeps."""
        caller = ref.caller
        masked = await redis_reply(
            self._redis.hget(self.key_for(caller, "profile"), "masked_number")
        )
        return CallerIdentity(
            agent_id=ref.agent_id,
            key=ref.caller_key,
            masked=masked.decode() if masked else ref.masked,
        )

    async def replace_transcript(
        self, caller: CallerIdentity, call_id: str, turns: Sequence[Turn]
    ) -> None:
        """Overwrite a call's stored turns with edited copies (e.g. scrubbed), in one step.

        ``turns`` are the call's turns as :meth:`get_call` returned them, in order, with their
        text changed; the same turns among the caller's recent turns are replaced too. A turn
        that is no longer stored at its position is left alone.
        """
        _, transcript_key = self._keys.call(caller, call_id)
        args: list[str | int] = []
        for index, turn in enumerate(turns):
            args += [index, turn.model_dump_json(exclude={"call_id"}, exclude_none=True)]
        if args:
            keys = [transcript_key, self.key_for(caller, "turns")]
            await redis_reply(self._replace_turns(keys=keys, args=args))

    async def mark_failed(self, caller: CallerIdentity, call_id: str, reason: str) -> bool:
        """Record that a closed call's analysis failed; its transcript and record stay.

        Returns:
            False when the call was analysed meanwhile, or is not stored (forgotten, expired).
        """
        record_key, _ = self._keys.call(caller, call_id)
        raw = await redis_reply(self._redis.get(record_key))
        record = self._parse(CallRecord, raw, what="call record") if raw is not None else None
        if record is None:
            return False
        failed = record.model_copy(update={"status": CallStatus.FAILED, "error": reason})
        payload = failed.model_dump_json(exclude={"transcript"}, exclude_defaults=True)
        keys = [self.key_for(caller, "callstate"), record_key]
        return bool(await redis_reply(self._mark_failed(keys=keys, args=[call_id, payload])))

    async def recent_calls(self, agent_id: str, *, since: float, limit: int = 500) -> list[CallRef]:
        """Calls of one agent that ended since ``since``, newest first."""
        members = await redis_reply(
            self._redis.zrevrangebyscore(
                self._keys.agent(agent_id, "calls"), "+inf", since, start=0, num=limit
            )
        )
        return [agent_call_ref(agent_id, member) for member in members]

    async def find_call(self, agent_id: str, call_id: str) -> CallRef | None:
        """Locate a call of one agent by its id."""
        cursor = 0
        # The id is the user's text: a "*" or "[" in it must match only itself.
        pattern = "*" + glob_escaped(agent_call_member("", call_id))
        calls = self._keys.agent(agent_id, "calls")
        while True:
            cursor, page = await redis_reply(self._redis.zscan(calls, cursor, match=pattern))
            for member, _score in page:
                return agent_call_ref(agent_id, member)
            if cursor == 0:
                return None

    # -- privacy and administration ---------------------------------------------------------

    async def forget(self, caller: CallerIdentity) -> dict[str, int]:
        """Remove everything stored about one caller, at once.

        Returns:
            How many of each kind were removed (``keys``, ``facts``, ``calls``, ``turns``).
        """
        keys = self._keys.caller_keys(caller)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrange(keys["calls"], 0, -1)
        pipe.hkeys(keys["callstate"])
        pipe.hlen(keys["facts"])
        pipe.llen(keys["turns"])
        call_ids, closed, n_facts, n_turns = await redis_reply(pipe.execute())
        open_ids = await self._open_call_ids(caller)
        ids = {i.decode() for i in (*call_ids, *closed)} | open_ids
        doomed = list(keys.values())
        for call_id in ids:
            doomed.extend(self._keys.call(caller, call_id))
        removed = await redis_reply(self._redis.delete(*doomed))
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrem(self._keys.agent(caller.agent_id, "callers"), caller.key)
        members = [agent_call_member(caller.key, call_id) for call_id in ids]
        if members:
            pipe.zrem(self._keys.agent(caller.agent_id, "calls"), *members)
            pipe.zrem(self._keys.agent(caller.agent_id, "open"), *members)
        await redis_reply(pipe.execute())
        await self.followups.remove(caller.agent_id, members)
        return {"keys": removed, "facts": n_facts, "calls": len(ids), "turns": n_turns}

    async def _open_call_ids(self, caller: CallerIdentity) -> set[str]:
        open_key = self._keys.agent(caller.agent_id, "open")
        head = agent_call_member(caller.key, "")
        prefix, pattern = head.encode(), glob_escaped(head) + "*"
        found: set[str] = set()
        cursor = 0
        while True:
            cursor, page = await redis_reply(self._redis.zscan(open_key, cursor, match=pattern))
            found.update(member[len(prefix) :].decode() for member, _ in page)
            if cursor == 0:
                return found

    async def export(self, caller: CallerIdentity) -> dict[str, Any]:
        """All of one caller's data as a JSON-serialisable dict (embeddings left out)."""
        keys = self._keys.caller_keys(caller)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(keys["profile"])
        pipe.lrange(keys["turns"], 0, -1)
        pipe.zrange(keys["calls"], 0, -1)
        pipe.hgetall(keys["kv"])
        profile_raw, turns_raw, call_ids, kv_raw = await redis_reply(pipe.execute())
        open_ids = await self._open_call_ids(caller)
        calls = []
        for call_id in [i.decode() for i in call_ids] + sorted(open_ids):
            record = await self.get_call(caller, call_id)
            if record is not None:
                calls.append(record.model_dump(mode="json"))
        return {
            "agent_id": caller.agent_id,
            "caller": caller.masked,
            "profile": self._profile(profile_raw).model_dump(mode="json"),
            "facts": [f.model_dump(mode="json") for f in await self.all_facts(caller)],
            "recent_turns": [json.loads(raw) for raw in turns_raw],
            "calls": calls,
            "values": {k.decode(): json.loads(v) for k, v in kv_raw.items()},
        }

    async def list_callers(
        self, agent_id: str, *, offset: int = 0, limit: int = 50
    ) -> list[CallerSummary]:
        """One page of an agent's callers, most recently seen first."""
        index = self._keys.agent(agent_id, "callers")
        members = await redis_reply(self._redis.zrevrange(index, offset, offset + limit - 1))
        pipe = self._redis.pipeline(transaction=False)
        for member in members:
            caller = CallerIdentity(agent_id=agent_id, key=member.decode(), masked="")
            pipe.hgetall(self.key_for(caller, "profile"))
        profiles = await redis_reply(pipe.execute()) if members else []
        return [
            CallerSummary(key=member.decode(), profile=self._profile(raw))
            for member, raw in zip(members, profiles, strict=True)
            if raw
        ]

    # -- key-value memory for tools and integrations ----------------------------------------

    async def get_value(self, caller: CallerIdentity, name: str) -> Any:
        """One stored value (JSON-decoded), or None."""
        raw = await redis_reply(self._redis.hget(self.key_for(caller, "kv"), name))
        return None if raw is None else json.loads(raw)

    async def set_value(self, caller: CallerIdentity, name: str, value: Any) -> None:
        """Store one JSON-serialisable value under ``name``."""
        await self._hset(caller, ["kv"], [(1, name, json.dumps(value))])

    async def delete_value(self, caller: CallerIdentity, name: str) -> bool:
        """Remove one value; True if it existed."""
        return bool(await redis_reply(self._redis.hdel(self.key_for(caller, "kv"), name)))

    async def items(self, caller: CallerIdentity) -> dict[str, Any]:
        """Every stored value of a caller."""
        raw = await redis_reply(self._redis.hgetall(self.key_for(caller, "kv")))
        return {k.decode(): json.loads(v) for k, v in raw.items()}


def _profile_update(record: CallRecord) -> dict[str, str]:
    analysis = record.analysis
    if analysis is None:
        return {}
    fields = {
        "language": analysis.language,
        "last_sentiment": analysis.sentiment.value,
        "last_summary": analysis.summary,
        "last_action": analysis.action,
        "urgency": str(analysis.urgency),
        # Replaced by every analysis, so a stale line is never spoken: empty means the template.
        "opening_line": analysis.opening_line or "",
    }
    if analysis.caller_name:
        fields["name"] = analysis.caller_name
    return fields
