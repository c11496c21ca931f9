"""Caller memory in Redis: profile, facts, recent turns, call records and key-value memory.

Every key of one caller carries one hash tag, ``{agent:callerkey}``, so multi-key updates run
atomically (a Lua script or MULTI/EXEC) and the same code runs on Redis Cluster. Agent-wide
indexes (callers, calls, open calls) live under the agent's own tag and are updated next to,
not inside, the caller's atomic step: they are idempotent and only ever point at caller data.

The client is injected and must be created with ``decode_responses=False`` (embeddings are
binary). Redis failures surface as :class:`MemoryUnavailableError` (classified by what
happened); stored values that cannot be parsed are skipped with a warning naming their kind and
left in place, never overwritten.

Forget is final. :meth:`MemoryStore.forget` leaves a *tombstone* under the caller's hash tag
(the key names only the keyed hash; its value is the time of the forget) that expires after
``tombstone_seconds``, the longest a write of an earlier call can still arrive. Every script
that writes a caller's memory checks it in the same atomic step and refuses a write that
belongs to a call started before the forget. A call started after it is the caller's new
memory and is written as usual (so is a write outside any call, e.g. an admin's).

A caller keeps at most ``max_facts`` facts: when a write goes over the cap, the lowest-value
facts are evicted in the same step (superseded ones first, then those under the confidence
floor, then the least recently confirmed).

Every facts write bumps the caller's facts version (``facts_version`` in the profile hash); the
analysis worker writes its merge only if the version is still the one it merged against
(:class:`StaleMemoryError` otherwise, and it merges again), so two analyses of one caller never
bring back a superseded fact.

Every write that changes what the next call start reads bumps the caller's memory version,
deletes their call-start digest (:mod:`memory.store.digest`) and asks the worker to rebuild it;
appended turns bump it too and are followed by the call's close, which asks.

With a call history (:mod:`memory.history`), a forget reaches it too, first: the caller's rows
go before their Redis keys, and a history that does not answer stops the forget before anything
is deleted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from memory.backend.coalesce import ReadCoalescer
from memory.backend.reply import REDIS_FAILURES, classified, redis_reply
from memory.errors import ForgottenCallerError, HistoryUnavailableError, RapportMemoryError
from memory.history.store import CallHistory
from memory.models import (
    MAX_TEXT_CHARS,
    CallerMemory,
    CallerProfile,
    CallRecord,
    CallStatus,
    Fact,
    Turn,
    now,
    valid_text,
)
from memory.privacy.erasure import DEFAULT_ERASURE_REWRITE_S, ErasureScheduler, schedule_erasure
from memory.privacy.identity import CallerIdentity
from memory.store.codec import (
    PARSE_INLINE_FACTS,
    candidate_facts,
    json_value,
    parse_facts,
    parse_one,
    parse_profile,
    parse_turns,
    profile_update,
    turn_json,
)
from memory.store.digest import CallStartSpec, decode_digest
from memory.store.followup_index import FollowUpIndex
from memory.store.keys import CallRef, KeyLayout, agent_call_member, agent_call_ref, glob_escaped
from memory.store.scripts import (
    REFUSED,
    STALE,
    AppendTurns,
    DeleteFacts,
    HsetAll,
    MarkFailed,
    ReadMemory,
    RecordCall,
    ReplaceTurns,
    SetEmbeddings,
    UpsertFacts,
    WriteDigest,
)

#: Turns kept per call transcript; a runaway call cannot grow a record without bound.
MAX_TRANSCRIPT_TURNS = 2000
#: Facts a caller keeps by default (``RAPPORT_MEMORY_MAX_FACTS``).
DEFAULT_MAX_FACTS = 500
#: Largest key-value memory value by default, in JSON bytes (``RAPPORT_MEMORY_MAX_VALUE_BYTES``).
DEFAULT_MAX_VALUE_BYTES = 4096
#: How long a tombstone outlives a forget by default (``RAPPORT_FORGET_TOMBSTONE_HOURS``).
DEFAULT_TOMBSTONE_SECONDS = 48 * 3600
_DAY = 86_400


class StaleMemoryError(RapportMemoryError):
    """The caller's facts changed since they were read: merge again and retry the write."""


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
        max_facts: Facts kept per caller (0 = no cap); the lowest-value ones are evicted.
        max_text_chars: Longest turn or fact text stored; longer text is cut before scrubbing.
        max_value_bytes: Largest key-value memory value (JSON bytes).
        tombstone_seconds: How long a forget refuses writes of calls that began before it.
        erasure_rewrite_s: Longest time a forgotten caller stays in the append-only file
            (see :mod:`memory.privacy.erasure`).
        history: The call history in SQL, reached by forget and export (None: off).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "rapport",
        retention_days: int = 90,
        recent_exchanges: int = 10,
        max_facts: int = DEFAULT_MAX_FACTS,
        max_text_chars: int = MAX_TEXT_CHARS,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        tombstone_seconds: int = DEFAULT_TOMBSTONE_SECONDS,
        erasure_rewrite_s: float = DEFAULT_ERASURE_REWRITE_S,
        history: CallHistory | None = None,
    ) -> None:
        self._redis = redis
        self.history = history
        self._keys = KeyLayout(prefix)
        self._retention_days = retention_days
        self._recent_turns = 2 * recent_exchanges
        self.max_facts = max_facts
        self.max_text_chars = max_text_chars
        self._max_value_bytes = max_value_bytes
        self._tombstone_seconds = tombstone_seconds
        self._erasure_rewrite_s = erasure_rewrite_s
        self._record_call = RecordCall(redis)
        self._upsert_facts = UpsertFacts(redis)
        self._append_turns = AppendTurns(redis)
        self._reads = ReadCoalescer(redis)
        self._hset_all = HsetAll(redis)
        self._replace_turns = ReplaceTurns(redis)
        self._mark_failed = MarkFailed(redis)
        self._set_embeddings = SetEmbeddings(redis)
        self._delete_facts = DeleteFacts(redis)
        self._write_digest = WriteDigest(redis)
        self.followups = FollowUpIndex(redis, self._keys, retention_seconds=self.ttl_seconds)

    def erasure_scheduler(self) -> ErasureScheduler:
        """The scheduler that rewrites the append-only file once a forget's erasure is due."""
        return ErasureScheduler(
            self._redis, prefix=self._keys.prefix, bound_s=self._erasure_rewrite_s
        )

    @property
    def ttl_seconds(self) -> int:
        """TTL refreshed on every write, 0 when retention is unbounded."""
        return self._retention_days * _DAY

    def key_for(self, caller: CallerIdentity, part: str) -> str:
        """The Redis key of one part (``profile``, ``facts``, …) of a caller's memory."""
        return self._keys.caller(caller, part)

    def _tombstone(self, caller: CallerIdentity) -> str:
        return self._keys.caller(caller, "forgotten")

    @property
    def digest_requests_key(self) -> str:
        """Set of ``agent|callerkey`` whose call-start digest is out of date (for the worker)."""
        return f"{self._keys.queue}:digest"

    @property
    def embedding_requests_key(self) -> str:
        """Set of ``agent|callerkey`` whose facts wait for embeddings (drained by the worker)."""
        return f"{self._keys.queue}:embed"

    # -- helpers ----------------------------------------------------------------------------

    def _cutoff(self) -> float:
        return now() - self.ttl_seconds if self.ttl_seconds else float("-inf")

    @property
    def horizon(self) -> float:
        """The oldest time Redis is sure to hold calls from (``-inf`` when kept for ever).

        Anything older is read from the call history, if there is one.
        """
        return self._cutoff()

    # -- the call path ----------------------------------------------------------------------

    async def load(self, caller: CallerIdentity) -> CallerMemory:
        """Load what one call needs about its caller, in one round trip.

        Facts are those within retention, above the confidence floor and not superseded;
        turns are the most recent exchanges within retention.
        """
        parts = [self.key_for(caller, part) for part in ("profile", "facts", "emb", "turns")]

        def commands(pipe: Any) -> None:
            ReadMemory.add_to(
                pipe,
                profile=parts[0],
                facts_key=parts[1],
                embeddings=parts[2],
                turns=parts[3],
                recent=self._recent_turns,
            )

        (reply,) = await redis_reply(self._reads(commands, 1))
        profile_raw, facts_raw, emb_raw, turns_raw = ReadMemory.parse(reply)
        cutoff = self._cutoff()
        if len(facts_raw) > PARSE_INLINE_FACTS:
            # More than a capped caller keeps (written before the cap): parse off the event
            # loop, so the call start's budget can still give up on it.
            parsed = await asyncio.to_thread(parse_facts, facts_raw, emb_raw)
        else:
            parsed = parse_facts(facts_raw, emb_raw)
        facts = [fact for fact in parsed if fact.injectable and fact.last_confirmed_at >= cutoff]
        facts.sort(key=lambda fact: fact.last_confirmed_at, reverse=True)
        turns = parse_turns(turns_raw)
        return CallerMemory(
            profile=parse_profile(profile_raw),
            facts=facts,
            recent_turns=[turn for turn in turns if turn.at >= cutoff],
        )

    # -- the call start ----------------------------------------------------------------------

    async def read_digest(self, caller: CallerIdentity, spec: CallStartSpec) -> CallerMemory | None:
        """The caller's call-start memory from their digest, in one round trip.

        The digest alone: every write that changes what it was made from deletes it (see
        :mod:`memory.store.scripts`), so a stored digest is current.

        Returns:
            The profile, recent turns and chosen facts (``selected``); None when there is no
            digest (none built yet, or the memory changed since), or it does not serve this
            call start (another spec, too old).
        """
        raw = await redis_reply(self._reads.get(self.key_for(caller, "digest")))
        return decode_digest(raw, spec=spec, at=now())

    async def load_candidates(
        self, caller: CallerIdentity, *, count: int, vectors: bool
    ) -> tuple[CallerMemory, int]:
        """What a call start's selection needs, bounded whatever the caller's memory holds.

        The profile and recent turns as :meth:`load` reads them, and of the facts only the
        ``count`` candidates the selection ranks (:func:`memory.store.codec.candidate_facts`),
        validated in full; the rest are read for their confidence and time only. Vectors are
        read only when asked for, and only the candidates'.

        Returns:
            The memory (``complete`` when no fact was left out) and the memory version it was
            read at.
        """
        keys = self._keys.caller_keys(caller)
        recent = self._recent_turns

        def commands(pipe: Any) -> None:
            pipe.hgetall(keys["profile"])
            pipe.hgetall(keys["facts"])
            pipe.lrange(keys["turns"], -recent, -1) if recent else pipe.lrange(keys["turns"], 1, 0)

        profile_raw, facts_raw, turns_raw = await redis_reply(self._reads(commands, 3))
        cutoff = self._cutoff()
        candidates, eligible = candidate_facts(facts_raw, cutoff=cutoff, count=count)
        embeddings: dict[bytes, bytes] = {}
        if vectors and candidates:
            ids = list(candidates)
            stored = await redis_reply(self._redis.hmget(keys["emb"], ids))
            embeddings = {i: v for i, v in zip(ids, stored, strict=True) if v is not None}
        facts = [
            fact
            for fact in parse_facts(candidates, embeddings)
            if fact.injectable and fact.last_confirmed_at >= cutoff
        ]
        memory = CallerMemory(
            profile=parse_profile(profile_raw),
            facts=facts,
            recent_turns=[turn for turn in parse_turns(turns_raw) if turn.at >= cutoff],
            complete=eligible <= count,
        )
        return memory, int(profile_raw.get(b"memory_version") or 0)

    async def write_digest(self, caller: CallerIdentity, *, version: int, digest: bytes) -> bool:
        """Store a call-start digest built from the memory at ``version``.

        Returns:
            False when the memory changed since (the digest would be stale) or is gone.
        """
        return await self._write_digest(
            profile=self.key_for(caller, "profile"),
            digest_key=self.key_for(caller, "digest"),
            version=version,
            digest=digest,
        )

    async def request_digest(self, caller: CallerIdentity, spec: CallStartSpec) -> None:
        """Ask the worker for a caller's digest, and tell it how their agent chooses facts."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._keys.agent(caller.agent_id, "callstart"), spec.to_json())
        self._ask_for_digest(pipe, caller)
        await redis_reply(pipe.execute())

    async def call_start_spec(self, agent_id: str) -> CallStartSpec | None:
        """How an agent's call start chooses facts, as its bot last said (None: never said)."""
        raw = await redis_reply(self._redis.get(self._keys.agent(agent_id, "callstart")))
        return None if raw is None else CallStartSpec.from_json(raw)

    async def digest_requests(self, *, count: int = 100) -> list[CallerIdentity]:
        """Take up to ``count`` callers whose call-start digest is out of date (each once)."""
        return await self._take_requests(self.digest_requests_key, count)

    async def request_embeddings(self, caller: CallerIdentity) -> None:
        """Ask the worker to embed a caller's facts that have no current vector.

        Nothing is embedded on the call path: such facts are ranked lexically meanwhile.
        """
        pipe = self._redis.pipeline(transaction=False)
        self._ask_for_embeddings(pipe, caller)
        await redis_reply(pipe.execute())

    def _ask_for_embeddings(self, pipe: Any, caller: CallerIdentity) -> None:
        pipe.sadd(self.embedding_requests_key, f"{caller.agent_id}|{caller.key}")
        pipe.expire(self.embedding_requests_key, _DAY)

    def _ask_for_digest(self, pipe: Any, caller: CallerIdentity) -> None:
        pipe.sadd(self.digest_requests_key, f"{caller.agent_id}|{caller.key}")
        pipe.expire(self.digest_requests_key, _DAY)

    async def embedding_requests(self, *, count: int = 100) -> list[CallerIdentity]:
        """Take up to ``count`` callers whose facts wait for embeddings (each taken once)."""
        return await self._take_requests(self.embedding_requests_key, count)

    async def _take_requests(self, key: str, count: int) -> list[CallerIdentity]:
        members = await redis_reply(self._redis.spop(key, count))
        callers = []
        for member in members or []:
            agent_id, _, caller_key = member.decode().partition("|")
            callers.append(CallerIdentity(agent_id=agent_id, key=caller_key, masked=""))
        return callers

    async def append_turn(self, caller: CallerIdentity, turn: Turn) -> None:
        """Append one finished turn (see :meth:`append_turns`)."""
        await self.append_turns(caller, [turn])

    async def append_turns(
        self,
        caller: CallerIdentity,
        turns: Sequence[Turn],
        *,
        call_started_at: float | None = None,
    ) -> None:
        """Append finished turns of one call to its transcript and to the recent turns.

        The call is marked open until it is closed or analysed, so a call whose bot died
        mid-call can still be found and analysed.

        Args:
            caller: Whose call.
            turns: Turns of one call, in order.
            call_started_at: When the call began (default: its first turn); a forget after
                it refuses the write.

        Raises:
            ForgottenCallerError: The caller was forgotten after the call began.
        """
        if not turns:
            return
        call_id = turns[0].call_id
        if not call_id or any(turn.call_id != call_id for turn in turns):
            raise ValueError("stored turns need the call_id of one call")
        keys = self._keys.caller_keys(caller)
        _, transcript_key = self._keys.call(caller, call_id)
        # The transcript key already names the call; the script numbers each turn (``seq``).
        # A turn that already has a number (copied from a stored one) gets a new one.
        payloads = [turn_json(t.model_copy(update={"seq": None}) if t.seq else t) for t in turns]
        started = turns[0].at if call_started_at is None else call_started_at
        open_calls = self._keys.agent(caller.agent_id, "open")
        member = agent_call_member(caller.key, call_id)
        appended = await self._append_turns(
            transcript=transcript_key,
            recent=keys["turns"],
            profile=keys["profile"],
            digest_key=keys["digest"],
            tombstone=self._tombstone(caller),
            transcript_cap=MAX_TRANSCRIPT_TURNS,
            recent_cap=self._recent_turns,
            masked=caller.masked,
            ttl=self.ttl_seconds,
            turns=payloads,
            call_start=started,
        )
        if appended == REFUSED:
            raise ForgottenCallerError("the caller was forgotten during this call")
        # After the turns, never before: a refused write must not list the call as open.
        await redis_reply(self._redis.zadd(open_calls, {member: turns[-1].at}))

    # -- after the call ---------------------------------------------------------------------

    async def close_call(self, caller: CallerIdentity, record: CallRecord) -> bool:
        """Store a call that just ended (before analysis); counts the call once.

        Returns:
            False when this call id was already closed or analysed (nothing changed).
        """
        ended = record.model_copy(update={"status": CallStatus.ENDED})
        try:
            return await self._write_call(caller, ended, ())
        except ForgottenCallerError:
            return False

    async def record_call(
        self,
        caller: CallerIdentity,
        record: CallRecord,
        *,
        facts: Sequence[Fact] = (),
        facts_version: int | None = None,
    ) -> bool:
        """Store an analysed call: record, profile update and fact upserts in one atomic step.

        Idempotent by call id: replaying an analysed call changes nothing.

        Args:
            caller: Whose call.
            record: The analysed record.
            facts: Facts to upsert (the merge).
            facts_version: The facts version the merge was made from (see
                :meth:`facts_with_version`); None writes whatever changed meanwhile.

        Returns:
            False when this call id was already analysed.

        Raises:
            ForgottenCallerError: The caller was forgotten after the call began.
            StaleMemoryError: The facts changed since ``facts_version``; merge again.
        """
        if record.analysis is None:
            raise ValueError("record_call needs an analysed call record")
        analysed = record.model_copy(update={"status": CallStatus.ANALYSED})
        return await self._write_call(caller, analysed, facts, facts_version=facts_version)

    async def _write_call(
        self,
        caller: CallerIdentity,
        record: CallRecord,
        facts: Iterable[Fact],
        *,
        facts_version: int | None = None,
    ) -> bool:
        keys = self._keys.caller_keys(caller)
        record_key, transcript_key = self._keys.call(caller, record.call_id)
        at = record.ended_at or record.started_at
        written = await self._record_call(
            keys=keys,
            record_key=record_key,
            transcript_key=transcript_key,
            tombstone=self._tombstone(caller),
            call_id=record.call_id,
            analysed=record.status == CallStatus.ANALYSED,
            record_json=record.model_dump_json(exclude={"transcript"}, exclude_defaults=True),
            at=at,
            ttl=self.ttl_seconds,
            masked=caller.masked,
            facts_version=facts_version,
            max_facts=self.max_facts,
            profile=profile_update(record),
            facts=[(fact.id, fact.stored_json(), fact.embedding or b"") for fact in facts],
            call_start=record.started_at,
        )
        if written == REFUSED:
            raise ForgottenCallerError("the caller was forgotten after this call began")
        if written == STALE:
            raise StaleMemoryError("the caller's facts changed since they were merged")
        member = agent_call_member(caller.key, record.call_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrem(self._keys.agent(caller.agent_id, "open"), member)
        pipe.zadd(self._keys.agent(caller.agent_id, "callers"), {caller.key: at}, gt=True)
        pipe.zadd(self._keys.agent(caller.agent_id, "calls"), {member: at})
        if written:
            self.followups.add_to(pipe, caller, record)
            self._ask_for_digest(pipe, caller)
        await redis_reply(pipe.execute())
        return bool(written)

    async def upsert_facts(
        self,
        caller: CallerIdentity,
        facts: Sequence[Fact],
        *,
        call_started_at: float | None = None,
    ) -> None:
        """Store facts at once (the ``remember`` tool), outside any call record.

        Args:
            caller: Whose facts.
            facts: The facts (their text is cut to ``max_text_chars`` and made valid UTF-8).
            call_started_at: When the call that told them began (None: a write outside a
                call, taken as now); a forget after it refuses the write.

        Raises:
            ForgottenCallerError: The caller was forgotten after the call began.
        """
        if not facts:
            return
        rows: list[tuple[str, str, bytes]] = []
        for fact in facts:
            text = valid_text(fact.text[: self.max_text_chars])
            stored = fact if text == fact.text else fact.model_copy(update={"text": text})
            rows.append((fact.id, stored.stored_json(), fact.embedding or b""))
        written = await self._upsert_facts(
            profile=self.key_for(caller, "profile"),
            facts_key=self.key_for(caller, "facts"),
            embeddings=self.key_for(caller, "emb"),
            digest_key=self.key_for(caller, "digest"),
            tombstone=self._tombstone(caller),
            ttl=self.ttl_seconds,
            max_facts=self.max_facts,
            facts=rows,
            call_start=now() if call_started_at is None else call_started_at,
        )
        if written == REFUSED:
            raise ForgottenCallerError("the caller was forgotten during this call")
        pipe = self._redis.pipeline(transaction=False)
        self._ask_for_digest(pipe, caller)
        if any(fact.embedding is None for fact in facts):
            self._ask_for_embeddings(pipe, caller)
        await redis_reply(pipe.execute())

    async def _hset(
        self,
        caller: CallerIdentity,
        parts: list[str],
        fields: list[tuple[int, str, str | bytes]],
        *,
        call_started_at: float | None,
        call_start_reads: bool,
    ) -> None:
        """Set fields (1-based index into ``parts``, field, value) and refresh the TTLs.

        ``call_start_reads``: the fields are part of what a call start reads (the profile's), so
        the memory version is bumped and the digest rebuilt.
        """
        if not fields:
            return
        written = await self._hset_all(
            hashes=[self.key_for(caller, part) for part in parts],
            digest_key=self.key_for(caller, "digest"),
            tombstone=self._tombstone(caller),
            ttl=self.ttl_seconds,
            profile_index=parts.index("profile") + 1 if call_start_reads else 0,
            fields=fields,
            call_start=now() if call_started_at is None else call_started_at,
        )
        if written == REFUSED:
            raise ForgottenCallerError("the caller was forgotten during this call")
        if call_start_reads:
            pipe = self._redis.pipeline(transaction=False)
            self._ask_for_digest(pipe, caller)
            await redis_reply(pipe.execute())

    async def facts_with_version(self, caller: CallerIdentity) -> tuple[list[Fact], int]:
        """Every stored fact (as :meth:`all_facts`) and the facts version they were read at."""
        keys = self._keys.caller_keys(caller)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(keys["facts"])
        pipe.hgetall(keys["emb"])
        pipe.hget(keys["profile"], "facts_version")
        facts_raw, emb_raw, version = await redis_reply(pipe.execute())
        return parse_facts(facts_raw, emb_raw), int(version or 0)

    async def delete_facts(self, caller: CallerIdentity, fact_ids: Sequence[str]) -> None:
        """Delete facts and their embeddings (ids not stored are ignored)."""
        if not fact_ids:
            return
        deleted = await self._delete_facts(
            profile=self.key_for(caller, "profile"),
            facts_key=self.key_for(caller, "facts"),
            embeddings=self.key_for(caller, "emb"),
            digest_key=self.key_for(caller, "digest"),
            fact_ids=fact_ids,
        )
        if deleted:
            pipe = self._redis.pipeline(transaction=False)
            self._ask_for_digest(pipe, caller)
            await redis_reply(pipe.execute())

    async def set_embeddings(self, caller: CallerIdentity, embeddings: dict[str, bytes]) -> int:
        """Store the embeddings of existing facts, by fact id, leaving the facts as they are.

        Returns:
            How many were stored (ids of facts no longer stored are skipped).
        """
        if not embeddings:
            return 0
        stored = await self._set_embeddings(
            facts_key=self.key_for(caller, "facts"),
            embeddings=self.key_for(caller, "emb"),
            profile=self.key_for(caller, "profile"),
            digest_key=self.key_for(caller, "digest"),
            ttl=self.ttl_seconds,
            vectors=embeddings,
        )
        if stored:
            pipe = self._redis.pipeline(transaction=False)
            self._ask_for_digest(pipe, caller)
            await redis_reply(pipe.execute())
        return stored

    async def set_name(
        self, caller: CallerIdentity, name: str, *, call_started_at: float | None = None
    ) -> None:
        """Store the caller's name as they gave it during a call.

        Raises:
            ForgottenCallerError: The caller was forgotten after the call began.
        """
        name = valid_text(name[: self.max_text_chars])
        await self._hset(
            caller,
            ["profile"],
            [(1, "name", name), (1, "masked_number", caller.masked)],
            call_started_at=call_started_at,
            call_start_reads=True,
        )

    async def keep_number(
        self, caller: CallerIdentity, sealed: bytes, *, call_started_at: float | None = None
    ) -> None:
        """Keep the caller's number, sealed (:mod:`memory.privacy.numbers`), for calling back.

        Never exported: :meth:`export` leaves it out, and :meth:`forget` deletes it with the rest.

        Raises:
            ForgottenCallerError: The caller was forgotten after the call began.
        """
        await self._hset(
            caller,
            ["contact"],
            [(1, "number", sealed)],
            call_started_at=call_started_at,
            call_start_reads=False,  # a call start never reads it
        )

    async def sealed_number(self, caller: CallerIdentity) -> bytes | None:
        """The caller's sealed number, or None (anonymous, not kept, forgotten or expired)."""
        sealed: bytes | None = await redis_reply(
            self._redis.hget(self.key_for(caller, "contact"), "number")
        )
        return sealed

    async def get_call(self, caller: CallerIdentity, call_id: str) -> CallRecord | None:
        """One call record with its transcript, or None if unknown (or expired)."""
        record_key, transcript_key = self._keys.call(caller, call_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(record_key)
        pipe.lrange(transcript_key, 0, -1)
        raw, turns_raw = await redis_reply(pipe.execute())
        if raw is None and not turns_raw:
            return None
        turns = [t.model_copy(update={"call_id": call_id}) for t in parse_turns(turns_raw)]
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
        record = parse_one(CallRecord, raw, what="call record")
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
            parse_one(CallRecord, raw, what="call record") if raw is not None else None
            for raw in raws
        ]

    async def all_facts(self, caller: CallerIdentity) -> list[Fact]:
        """Every stored fact of a caller, superseded and low-confidence ones included."""
        keys = self._keys.caller_keys(caller)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(keys["facts"])
        pipe.hgetall(keys["emb"])
        facts_raw, emb_raw = await redis_reply(pipe.execute())
        return parse_facts(facts_raw, emb_raw)

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
            raise classified(e) from e
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
        if not turns:
            return
        _, transcript_key = self._keys.call(caller, call_id)
        await self._replace_turns(
            transcript=transcript_key,
            recent=self.key_for(caller, "turns"),
            profile=self.key_for(caller, "profile"),
            digest_key=self.key_for(caller, "digest"),
            turns=[(index, turn_json(turn)) for index, turn in enumerate(turns)],
        )
        pipe = self._redis.pipeline(transaction=False)
        self._ask_for_digest(pipe, caller)
        await redis_reply(pipe.execute())

    async def mark_failed(self, caller: CallerIdentity, call_id: str, reason: str) -> bool:
        """Record that a closed call's analysis failed; its transcript and record stay.

        Returns:
            False when the call was analysed meanwhile, or is not stored (forgotten, expired).
        """
        record_key, _ = self._keys.call(caller, call_id)
        raw = await redis_reply(self._redis.get(record_key))
        record = parse_one(CallRecord, raw, what="call record") if raw is not None else None
        if record is None:
            return False
        failed = record.model_copy(update={"status": CallStatus.FAILED, "error": reason})
        payload = failed.model_dump_json(exclude={"transcript"}, exclude_defaults=True)
        return await self._mark_failed(
            call_states=self.key_for(caller, "callstate"),
            record_key=record_key,
            call_id=call_id,
            record=payload,
        )

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
        """Remove everything stored about one caller, at once, and leave a tombstone.

        The tombstone comes first, so a write of an earlier call that arrives while (or after)
        the keys are deleted is refused rather than bringing anything back. Queue entries are
        the queue's (see :meth:`AnalysisQueue.forget_caller`).

        The deletes reach the disk once the append-only file is rewritten, which this schedules
        (after the deletes: see :mod:`memory.privacy.erasure`).

        The call history's rows go first (:meth:`CallHistory.forget`, with its own tombstone):
        a history that does not answer raises before anything is deleted, so a forget is
        never half done without saying so.

        Returns:
            How many of each kind were removed (``keys``, ``facts``, ``calls``, ``turns``,
            ``history_calls``), and ``rewrite_by``: the Unix time by which the append-only file
            rewrite starts.

        Raises:
            HistoryUnavailableError: The call history did not answer; nothing was deleted.
            MemoryUnavailableError: Redis did not answer.
        """
        history_calls = 0
        if self.history is not None:
            try:
                history_calls = await self.history.forget(caller)
            except HistoryUnavailableError as e:
                raise HistoryUnavailableError(
                    "the call history did not answer: nothing was forgotten, try again"
                ) from e
        # Strictly after any call start already seen by this clock (a call starting in this
        # very second begins a new memory).
        await redis_reply(
            self._redis.set(self._tombstone(caller), repr(now()), ex=self._tombstone_seconds)
        )
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
        rewrite_by = await schedule_erasure(
            self._redis, prefix=self._keys.prefix, bound_s=self._erasure_rewrite_s
        )
        return {
            "keys": removed,
            "facts": n_facts,
            "calls": len(ids),
            "turns": n_turns,
            "history_calls": history_calls,
            "rewrite_by": int(rewrite_by) + 1,
        }

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
        """All of one caller's data as a JSON-serialisable dict (embeddings left out).

        With a call history, ``history`` holds every call it keeps of the caller (older ones
        than Redis holds included), oldest first.

        Raises:
            HistoryUnavailableError: The call history did not answer.
            MemoryUnavailableError: Redis did not answer.
        """
        kept = await self.history.caller_calls(caller) if self.history is not None else []
        history = [found.record.model_dump(mode="json") for found in kept]
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
            "profile": parse_profile(profile_raw).model_dump(mode="json"),
            "facts": [f.model_dump(mode="json") for f in await self.all_facts(caller)],
            "recent_turns": [t.model_dump(mode="json") for t in parse_turns(turns_raw)],
            "calls": calls,
            "values": {k.decode(errors="replace"): json_value(v) for k, v in kv_raw.items()},
            "history": history,
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
            CallerSummary(key=member.decode(), profile=parse_profile(raw))
            for member, raw in zip(members, profiles, strict=True)
            if raw
        ]

    # -- key-value memory for tools and integrations ----------------------------------------

    async def get_value(self, caller: CallerIdentity, name: str) -> Any:
        """One stored value (JSON-decoded), or None."""
        raw = await redis_reply(self._redis.hget(self.key_for(caller, "kv"), name))
        return None if raw is None else json_value(raw)

    async def set_value(
        self,
        caller: CallerIdentity,
        name: str,
        value: Any,
        *,
        call_started_at: float | None = None,
    ) -> None:
        """Store one JSON-serialisable value under ``name``.

        A string value is cut to ``max_text_chars``; text is made valid UTF-8.

        Raises:
            ValueError: The value's JSON is larger than ``max_value_bytes``.
            ForgottenCallerError: The caller was forgotten after the call began.
        """
        if isinstance(value, str):
            value = valid_text(value[: self.max_text_chars])
        payload = json.dumps(value, ensure_ascii=False).encode("utf-8", "replace")
        if len(payload) > self._max_value_bytes:
            raise ValueError(f"a stored value may take at most {self._max_value_bytes} bytes")
        await self._hset(
            caller,
            ["kv"],
            [(1, valid_text(name), payload)],
            call_started_at=call_started_at,
            call_start_reads=False,
        )

    async def delete_value(self, caller: CallerIdentity, name: str) -> bool:
        """Remove one value; True if it existed."""
        return bool(await redis_reply(self._redis.hdel(self.key_for(caller, "kv"), name)))

    async def items(self, caller: CallerIdentity) -> dict[str, Any]:
        """Every stored value of a caller."""
        raw = await redis_reply(self._redis.hgetall(self.key_for(caller, "kv")))
        return {k.decode(errors="replace"): json_value(v) for k, v in raw.items()}
