"""The analysis queue: ended calls waiting for their post-call analysis, on a Redis Stream.

Every key shares one hash tag, ``{queue}``, so each multi-key step below is atomic (a Lua script
or MULTI/EXEC), on Redis Cluster too:

- ``{prefix}:{queue}:analysis``: the stream of jobs, read by the consumer group
  ``analysis-workers``. A job names the call (agent id, caller key, masked number, call id),
  never a phone number or a word of the transcript.
- ``{prefix}:{queue}:analysis:dead``: dead letters, jobs that failed for good, with the reason.
  They expire with retention (trimmed by age whenever one is added and by the sweeper).
- ``{prefix}:{queue}:analysis:queued``: the calls that have a job in the stream, so a call is
  never queued twice.
- ``{prefix}:{queue}:analysis:closing``: calls being closed, by time.
  :func:`memory.calls.closing.end_call` notes the call here before it closes the record and clears
  the note when it queues the job, so a process that dies in between leaves a note that the
  worker's sweeper finds and finishes.

Delivery is at least once. A job is acknowledged, and deleted, only after its results are
written; while a worker analyses a job it renews its claim on it, so a job whose worker died is
claimed by another worker once it has gone ``claim_timeout`` without renewal (``XAUTOCLAIM``),
however long analyses take. The stream is capped (``MAXLEN ~``) only as a safety bound: jobs
are deleted when acknowledged, so the stream holds the backlog and nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from loguru import logger
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from memory.backend.outage import REDIS_OUTAGE
from memory.backend.reply import REDIS_FAILURES, classified, redis_reply
from memory.errors import MemoryUnavailableError
from memory.models import now
from memory.privacy.identity import CallerIdentity
from memory.store.keys import CallRef, KeyLayout, glob_escaped, queue_member, queue_ref

GROUP = "analysis-workers"
#: How long a worker's heartbeat is kept once it stops beating.
HEARTBEAT_TTL_S = 300

_T = TypeVar("_T")
#: A stream entry as the client returns it: id and fields.
_Entry = tuple[bytes, dict[bytes, bytes]]

# Queues a call unless it is queued already; clears its closing note and, for a re-queued dead
# letter, deletes the dead letter, all in one step.
# KEYS: stream, queued, closing, dead. ARGV: member, maxlen, dead letter id or '', (field, value)*
_ENQUEUE = """
redis.call('ZREM', KEYS[3], ARGV[1])
if ARGV[3] ~= '' then redis.call('XDEL', KEYS[4], ARGV[3]) end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return false end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 4))
"""

# Resets a job's idle time if this consumer still owns it (another may have claimed it).
# KEYS: stream. ARGV: group, consumer, message id
_RENEW = """
local owned = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #owned == 0 then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""


@dataclass(frozen=True, slots=True)
class AnalysisJob:
    """One call waiting for analysis, as a worker received it.

    Attributes:
        message_id: The stream entry id, used to acknowledge the job.
        caller: Whose call it is (no raw number: key and masked number only).
        call_id: The call to analyse.
        queued_at: When the job was queued (epoch seconds).
        deliveries: How many times the job was handed to a worker, this time included.
    """

    message_id: str
    caller: CallerIdentity
    call_id: str
    queued_at: float
    deliveries: int = 1


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A job that failed for good, with why."""

    message_id: str
    caller: CallerIdentity
    call_id: str
    reason: str
    failed_at: float


@dataclass(frozen=True, slots=True)
class InFlightJob:
    """A job delivered to a worker and not acknowledged yet."""

    message_id: str
    caller: CallerIdentity
    call_id: str
    consumer: str
    idle_seconds: float
    deliveries: int


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """How many jobs wait (not yet delivered), are being worked on, and are dead."""

    waiting: int
    pending: int
    dead: int


def _job_member(job: AnalysisJob) -> str:
    return queue_member(job.caller.agent_id, job.caller.key, job.call_id)


def _text(fields: Mapping[bytes, bytes], name: str) -> str:
    return fields[name.encode()].decode()


def _caller(fields: Mapping[bytes, bytes]) -> CallerIdentity:
    return CallerIdentity(
        agent_id=_text(fields, "agent"), key=_text(fields, "caller"), masked=_text(fields, "masked")
    )


# Acknowledges and deletes a job, dead-lettering it first when fields are given, atomically.
# (MULTI/EXEC would do, but redis-py's asyncio cluster transactions break the connection after.)
# KEYS: stream, dead letters, queued set.
# ARGV: group, message id, member, dead cap, oldest dead letter id kept ('' = all), fields...
_FINISH = """
if #ARGV > 5 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(ARGV, 6))
  if ARGV[5] ~= '' then redis.call('XTRIM', KEYS[2], 'MINID', ARGV[5]) end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('SREM', KEYS[3], ARGV[3]) end
"""


class AnalysisQueue:
    """Queue of calls to analyse, with a consumer group, claims and dead letters.

    Args:
        redis: An asyncio client (``decode_responses=False``). Its command timeout bounds how
            long a read may block, so the worker's client should allow a second or more.
        prefix: First segment of every key (the store's prefix).
        maxlen: Approximate cap of the job stream; it must exceed the largest backlog.
        dead_maxlen: Approximate cap of the dead-letter stream (oldest dropped first).
        retention_days: Dead letters older than this are dropped (0 = kept until retried).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "rapport",
        maxlen: int = 100_000,
        dead_maxlen: int = 100_000,
        retention_days: int = 90,
    ) -> None:
        self._redis = redis
        self._maxlen = maxlen
        self._dead_maxlen = dead_maxlen
        self._retention_s = retention_days * 86_400
        self.stream_key = KeyLayout(prefix).queue
        self.dead_key = f"{self.stream_key}:dead"
        self._queued_key = f"{self.stream_key}:queued"
        self._closing_key = f"{self.stream_key}:closing"
        self._sweep_key = f"{self.stream_key}:sweep"
        self._heartbeat_key = f"{self.stream_key}:heartbeat"
        self._enqueue = redis.register_script(_ENQUEUE)
        self._renew = redis.register_script(_RENEW)
        self._finish_job = redis.register_script(_FINISH)
        # A cluster client keeps its nodes' connection settings itself, not in one pool.
        pool = getattr(redis, "connection_pool", None)
        settings = pool.connection_kwargs if pool else getattr(redis, "connection_kwargs", {})
        timeout = settings.get("socket_timeout")
        # A blocked read must return before the client's command timeout fires.
        self._max_block = 0.8 * timeout if timeout else None

    async def _grouped(self, command: Callable[[], Awaitable[_T]]) -> _T:
        """Run a consumer-group command, creating the group first if it does not exist yet."""
        try:
            reply = await command()
            REDIS_OUTAGE.answered()
            return reply
        except ResponseError as e:
            # NOGROUP from most commands; XINFO says "no such key" when the stream is missing.
            if "NOGROUP" not in str(e) and "no such key" not in str(e):
                raise MemoryUnavailableError("Redis refused a queue command") from e
        except REDIS_FAILURES as e:
            REDIS_OUTAGE.failed(e)
            raise classified(e) from e
        await self.ensure_group()
        return await redis_reply(command())

    # -- producing ---------------------------------------------------------------------------

    async def enqueue(self, caller: CallerIdentity, call_id: str) -> bool:
        """Queue one ended call for analysis.

        Returns:
            False when the call already has a job in the stream (nothing was added).
        """
        return await self._add(caller, call_id, dead_id="")

    async def _add(self, caller: CallerIdentity, call_id: str, *, dead_id: str) -> bool:
        fields = {
            "agent": caller.agent_id,
            "caller": caller.key,
            "masked": caller.masked,
            "call": call_id,
            "queued_at": repr(now()),
        }
        keys = [self.stream_key, self._queued_key, self._closing_key, self.dead_key]
        args: list[str | int] = [
            queue_member(caller.agent_id, caller.key, call_id),
            self._maxlen,
            dead_id,
        ]
        args += [item for pair in fields.items() for item in pair]
        return bool(await redis_reply(self._enqueue(keys=keys, args=args)))

    async def note_closing(self, caller: CallerIdentity, call_id: str) -> None:
        """Note that a call is being closed; :meth:`enqueue` clears the note."""
        member = queue_member(caller.agent_id, caller.key, call_id)
        await redis_reply(self._redis.zadd(self._closing_key, {member: now()}, nx=True))

    async def stranded(self, *, older_than: float) -> list[CallRef]:
        """Calls noted as closing ``older_than`` seconds ago and never queued.

        Their references carry no masked number (see :meth:`MemoryStore.caller_of`).
        """
        members: Any = await redis_reply(
            self._redis.zrangebyscore(self._closing_key, "-inf", now() - older_than)
        )
        return [queue_ref(member) for member in members]

    async def drop_closing(self, ref: CallRef) -> None:
        """Forget a closing note that needs no job (the call is analysed, failed or gone)."""
        member = queue_member(ref.agent_id, ref.caller_key, ref.call_id)
        await redis_reply(self._redis.zrem(self._closing_key, member))

    # -- consuming ---------------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the stream and its consumer group if missing (from the first entry)."""
        try:
            await self._redis.xgroup_create(self.stream_key, GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise MemoryUnavailableError("Redis refused to create the group") from e
        except REDIS_FAILURES as e:
            REDIS_OUTAGE.failed(e)
            raise classified(e) from e

    async def read(self, consumer: str, *, block: float, count: int = 1) -> list[AnalysisJob]:
        """Take new jobs for ``consumer``, waiting up to ``block`` seconds for one."""
        if self._max_block is not None:
            block = min(block, self._max_block)
        reply: Any = await self._grouped(
            lambda: self._redis.xreadgroup(
                GROUP,
                consumer,
                {self.stream_key: ">"},
                count=count,
                block=max(1, int(block * 1000)),
            )
        )
        entries = reply[0][1] if reply else []
        return await self._jobs(entries, deliveries={})

    async def claim_stale(
        self, consumer: str, *, min_idle: float, count: int = 1
    ) -> list[AnalysisJob]:
        """Claim jobs whose worker has not renewed them for ``min_idle`` seconds (it died)."""
        reply: Any = await self._grouped(
            lambda: self._redis.xautoclaim(
                self.stream_key, GROUP, consumer, int(min_idle * 1000), "0-0", count=count
            )
        )
        entries = [entry for entry in reply[1] if entry[0] is not None]
        if not entries:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for message_id, _ in entries:
            pipe.xpending_range(self.stream_key, GROUP, message_id, message_id, 1)
        deliveries = {
            row["message_id"]: row["times_delivered"]
            for rows in await redis_reply(pipe.execute())
            for row in rows
        }
        return await self._jobs(entries, deliveries=deliveries)

    async def _jobs(
        self, entries: list[_Entry], *, deliveries: dict[bytes, int]
    ) -> list[AnalysisJob]:
        jobs = []
        for message_id, fields in entries:
            try:
                job = AnalysisJob(
                    message_id=message_id.decode(),
                    caller=_caller(fields),
                    call_id=_text(fields, "call"),
                    queued_at=float(fields[b"queued_at"]),
                    deliveries=deliveries.get(message_id, 1),
                )
            except (KeyError, ValueError, UnicodeDecodeError):
                # Not a job this code wrote: it can never be processed, so drop it.
                logger.warning("Dropping a malformed entry of the analysis stream")
                await self._finish(message_id.decode(), member=None)
                continue
            jobs.append(job)
        return jobs

    async def renew(self, consumer: str, job: AnalysisJob) -> bool:
        """Reset the job's idle time so no other worker claims it while this one works.

        Returns:
            False when another worker has claimed the job meanwhile.
        """
        args = [GROUP, consumer, job.message_id]
        return bool(await redis_reply(self._renew(keys=[self.stream_key], args=args)))

    async def ack(self, job: AnalysisJob) -> None:
        """Acknowledge and delete a job whose results are written."""
        await self._finish(job.message_id, member=_job_member(job))

    async def _finish(
        self, message_id: str, *, member: str | None, dead: dict[Any, Any] | None = None
    ) -> None:
        fields: list[Any] = [item for pair in (dead or {}).items() for item in pair]
        await redis_reply(
            self._finish_job(
                keys=[self.stream_key, self.dead_key, self._queued_key],
                args=[
                    GROUP,
                    message_id,
                    member or "",
                    self._dead_maxlen,
                    self._oldest_kept(),
                    *fields,
                ],
            )
        )

    def _oldest_kept(self) -> str:
        """The id before which dead letters have outlived retention ('' when kept forever)."""
        return f"{int((now() - self._retention_s) * 1000)}-0" if self._retention_s else ""

    async def expire_dead(self) -> int:
        """Drop the dead letters older than retention.

        Returns:
            How many were dropped.
        """
        oldest = self._oldest_kept()
        if not oldest:
            return 0
        return int(
            await redis_reply(self._redis.xtrim(self.dead_key, minid=oldest, approximate=False))
        )

    async def forget_caller(self, caller: CallerIdentity, *, batch: int = 1000) -> int:
        """Remove every job and dead letter of one caller (part of a forget).

        A job a worker holds at this moment is removed too; that worker's write is refused by
        the caller's tombstone.

        Returns:
            How many jobs and dead letters were removed.
        """
        agent, key = caller.agent_id.encode(), caller.key.encode()
        removed = 0
        for stream in (self.stream_key, self.dead_key):
            start = "-"
            while True:
                entries: Any = await redis_reply(self._redis.xrange(stream, min=start, count=batch))
                ids = [
                    message_id
                    for message_id, fields in entries
                    if fields.get(b"agent") == agent and fields.get(b"caller") == key
                ]
                if ids:
                    pipe = self._redis.pipeline(transaction=False)
                    if stream == self.stream_key:
                        pipe.xack(stream, GROUP, *ids)
                    pipe.xdel(stream, *ids)
                    await redis_reply(pipe.execute())
                    removed += len(ids)
                if len(entries) < batch:
                    break
                start = "(" + entries[-1][0].decode()
        pattern = glob_escaped(queue_member(caller.agent_id, caller.key, "")) + "*"
        members: list[bytes] = []
        async for member in self._redis.sscan_iter(self._queued_key, match=pattern):
            members.append(member)
        closing: list[bytes] = []
        async for member, _ in self._redis.zscan_iter(self._closing_key, match=pattern):
            closing.append(member)
        pipe = self._redis.pipeline(transaction=False)
        if members:
            pipe.srem(self._queued_key, *members)
        if closing:
            pipe.zrem(self._closing_key, *closing)
        if members or closing:
            await redis_reply(pipe.execute())
        return removed

    async def dead_letter(self, job: AnalysisJob, reason: str) -> None:
        """Move a job that failed for good to the dead-letter stream, with the reason.

        Args:
            job: The job (acknowledged and removed from the job stream in the same step).
            reason: Why it failed; must not contain call content (it is shown and logged).
        """
        dead: dict[Any, Any] = {
            "agent": job.caller.agent_id,
            "caller": job.caller.key,
            "masked": job.caller.masked,
            "call": job.call_id,
            "reason": reason,
            "failed_at": repr(now()),
            "deliveries": str(job.deliveries),
        }
        await self._finish(
            job.message_id,
            member=_job_member(job),
            dead=dead,
        )

    async def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters, oldest first."""
        entries: Any = await redis_reply(self._redis.xrange(self.dead_key, count=limit))
        return [
            DeadLetter(
                message_id=message_id.decode(),
                caller=_caller(fields),
                call_id=_text(fields, "call"),
                reason=_text(fields, "reason"),
                failed_at=float(fields[b"failed_at"]),
            )
            for message_id, fields in entries
        ]

    async def retry_dead(self, *, batch: int = 100) -> int:
        """Queue every dead letter again (each moved back in one atomic step).

        Returns:
            How many dead letters were re-queued (a call already queued is not added twice).
        """
        requeued = 0
        while letters := await self.dead_letters(limit=batch):
            for letter in letters:
                if await self._add(letter.caller, letter.call_id, dead_id=letter.message_id):
                    requeued += 1
        return requeued

    async def retry_dead_letter(self, message_id: str) -> bool:
        """Queue one dead letter again (moved back in one atomic step).

        Returns:
            False when there is no such dead letter, or its call is queued already.
        """
        entries: Any = await redis_reply(
            self._redis.xrange(self.dead_key, min=message_id, max=message_id, count=1)
        )
        if not entries:
            return False
        fields = entries[0][1]
        return await self._add(_caller(fields), _text(fields, "call"), dead_id=message_id)

    async def in_flight(self, *, limit: int = 100) -> list[InFlightJob]:
        """Jobs delivered to a worker and not acknowledged yet, oldest first."""
        rows: Any = await self._grouped(
            lambda: self._redis.xpending_range(self.stream_key, GROUP, "-", "+", limit)
        )
        if not rows:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for row in rows:
            pipe.xrange(self.stream_key, min=row["message_id"], max=row["message_id"], count=1)
        entries = await redis_reply(pipe.execute())
        return [
            InFlightJob(
                message_id=row["message_id"].decode(),
                caller=_caller(entry[0][1]),
                call_id=_text(entry[0][1], "call"),
                consumer=row["consumer"].decode(),
                idle_seconds=row["time_since_delivered"] / 1000,
                deliveries=row["times_delivered"],
            )
            for row, entry in zip(rows, entries, strict=True)
            if entry
        ]

    # -- housekeeping ------------------------------------------------------------------------

    async def counts(self) -> QueueCounts:
        """Jobs waiting, being worked on (delivered, not acknowledged) and dead."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.xlen(self.stream_key)
        pipe.xlen(self.dead_key)
        length, dead = await redis_reply(pipe.execute())
        summary = await self._grouped(lambda: self._redis.xpending(self.stream_key, GROUP))
        pending = summary["pending"]
        return QueueCounts(waiting=length - pending, pending=pending, dead=dead)

    async def beat(self, *, ttl: float = HEARTBEAT_TTL_S) -> None:
        """Note that a worker is alive now (one shared key: the freshest beat of any worker)."""
        await redis_reply(self._redis.set(self._heartbeat_key, repr(now()), ex=int(ttl)))

    async def last_beat(self) -> float | None:
        """When a worker last noted it was alive (epoch), or None when none has lately."""
        raw = await redis_reply(self._redis.get(self._heartbeat_key))
        return float(raw) if raw else None

    async def lead_sweep(self, consumer: str, *, every: float) -> bool:
        """Take the sweeper's turn: True for at most one consumer per ``every`` seconds."""
        acquired = self._redis.set(self._sweep_key, consumer, nx=True, px=int(every * 1000))
        return bool(await redis_reply(acquired))

    async def prune_consumers(self, *, idle_for: float) -> int:
        """Remove consumers (workers gone for good) idle ``idle_for`` seconds with no jobs."""
        consumers = await self._grouped(lambda: self._redis.xinfo_consumers(self.stream_key, GROUP))
        pipe = self._redis.pipeline(transaction=False)
        gone = [
            consumer["name"]
            for consumer in consumers
            if consumer["pending"] == 0 and consumer["idle"] >= idle_for * 1000
        ]
        for name in gone:
            pipe.xgroup_delconsumer(self.stream_key, GROUP, name)
        if gone:
            await redis_reply(pipe.execute())
        return len(gone)
