"""Erasure that reaches the disk: after a forget, Redis's append-only file is rewritten in time.

Deleting keys removes a caller from memory, but their writes stay in Redis's append-only file
(AOF) until Redis rewrites it, which otherwise happens only after tens of megabytes of later
writes. So :meth:`MemoryStore.forget` records a *pending erasure*: one key holding the time by
which the file must be rewritten, set only if absent (``SET NX``), so every forget until the
next rewrite shares the first one's deadline and many forgets cost one ``BGREWRITEAOF``.

:class:`ErasureScheduler` (run by every analysis worker) looks at that key a few times per
bound; once the deadline has passed, one scheduler claims it (compare-and-delete, so two
workers never rewrite twice) and asks every primary for ``BGREWRITEAOF``. The claim comes before
the rewrite, and a forget schedules after its deletes: a forget that lands after the claim sets
a new deadline, one before it is already in memory when the rewrite forks. A server busy with a
rewrite that may have forked before the claim gets the erasure back, due at once.

A managed Redis may refuse ``BGREWRITEAOF`` (or ``INFO``): that is logged once per process, and
the provider's own persistence policy decides when erased data leaves its disks.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

import redis.asyncio
from loguru import logger
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from memory.backend.reply import REDIS_FAILURES, classified, redis_reply
from memory.errors import MemoryUnavailableError
from memory.models import now

#: Default longest time erased data stays in the append-only file (``RAPPORT_ERASURE_REWRITE_S``).
DEFAULT_ERASURE_REWRITE_S = 600.0
#: Longest pause between two looks at the pending erasure.
_MAX_POLL_S = 15.0
_MIN_POLL_S = 0.05

# Set the deadline unless one is pending; return the one that holds.
_SCHEDULE = """redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])"""
# Take the pending erasure if it is still the one that was read.
_CLAIM = """if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0"""


def erasure_key(prefix: str) -> str:
    """The key holding the pending erasure's deadline (Unix time)."""
    return f"{prefix}:{{erasure}}:due"


def poll_interval(bound_s: float) -> float:
    """How often a scheduler looks at the pending erasure, for a bound of ``bound_s``."""
    return max(_MIN_POLL_S, min(bound_s / 10, _MAX_POLL_S))


class RewriteRefusedError(MemoryUnavailableError):
    """The server refused ``BGREWRITEAOF`` or ``INFO`` (a managed Redis may)."""


class _RewriteBusyError(MemoryUnavailableError):
    """A rewrite was already running; it may have forked before the erasure's deletes."""


async def schedule_erasure(client: redis.asyncio.Redis, *, prefix: str, bound_s: float) -> float:
    """Record that erased data must leave the disk; return when the rewrite starts at the latest.

    Args:
        client: The store's client.
        prefix: The key prefix.
        bound_s: Longest time until the rewrite (``RAPPORT_ERASURE_REWRITE_S``).

    Returns:
        Unix time by which ``BGREWRITEAOF`` is issued (a pending, earlier deadline holds).
    """
    poll = poll_interval(bound_s)
    deadline = now() + max(bound_s - poll, 0.0)
    script: Any = client.register_script(_SCHEDULE)
    held = await redis_reply(script(keys=[erasure_key(prefix)], args=[repr(deadline)]))
    return max(float(held), now()) + poll


class ErasureScheduler:
    """Issues ``BGREWRITEAOF`` on every primary once a pending erasure is due.

    Args:
        client: A client of the memory's Redis (plain or cluster).
        prefix: The key prefix.
        bound_s: The erasure bound; the scheduler looks a few times per bound.
    """

    def __init__(self, client: redis.asyncio.Redis, *, prefix: str, bound_s: float) -> None:
        self._redis = client
        self._key = erasure_key(prefix)
        self._poll_s = poll_interval(bound_s)
        self._claim: Any = client.register_script(_CLAIM)
        self._warned_refusal = False

    async def run(self, stop: asyncio.Event) -> None:
        """Rewrite whenever an erasure is due, until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.rewrite_if_due()
            except MemoryUnavailableError:
                logger.debug("Redis did not answer the erasure scheduler; retrying later")
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._poll_s)

    async def rewrite_if_due(self) -> bool:
        """Start the rewrite if the pending erasure is due.

        Returns:
            Whether this call started a rewrite.

        Raises:
            MemoryUnavailableError: Redis did not answer.
        """
        raw = await redis_reply(self._redis.get(self._key))
        if raw is None or float(raw) > now():
            return False
        if not await redis_reply(self._claim(keys=[self._key], args=[raw])):
            return False  # another scheduler took it
        try:
            await self._rewrite_primaries()
        except _RewriteBusyError:
            # Due again at once: the running rewrite may predate the forget's deletes.
            await redis_reply(self._redis.set(self._key, repr(now()), nx=True))
            return False
        except RewriteRefusedError:
            if not self._warned_refusal:
                self._warned_refusal = True
                logger.warning(
                    "Redis refused BGREWRITEAOF: erased callers stay in its append-only file "
                    "until it rewrites it itself (see README, Running in production)"
                )
            return False
        logger.info("Rewriting Redis's append-only file: forgotten callers leave the disk")
        return True

    def _primaries(self) -> list[Any]:
        if isinstance(self._redis, RedisCluster):
            return list(self._redis.get_primaries())
        return [None]

    async def _on(self, node: Any, *args: str) -> Any:
        client: Any = self._redis
        try:
            if node is None:
                return await client.execute_command(*args)
            return await client.execute_command(*args, target_nodes=node)
        except ResponseError as e:
            if "in progress" in str(e):
                raise _RewriteBusyError("an append-only file rewrite is in progress") from e
            raise RewriteRefusedError(f"Redis refused {args[0]} ({type(e).__name__})") from e
        except REDIS_FAILURES as e:
            raise classified(e) from e

    async def _rewrite_primaries(self) -> None:
        busy: _RewriteBusyError | None = None
        for node in self._primaries():
            info = await self._on(node, "INFO", "persistence")
            if not int(info.get("aof_enabled", 0)):
                continue  # nothing appended to rewrite; snapshots are the server's policy
            try:
                await self._on(node, "BGREWRITEAOF")
            except _RewriteBusyError as e:
                busy = e
        if busy is not None:
            raise busy
