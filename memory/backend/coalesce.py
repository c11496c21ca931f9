"""Coalescing concurrent reads into one Redis pipeline.

When many reads start at once (a burst of incoming calls loading their callers' memory), each
on its own costs a connection, a write, a read and a parse in Python; sent together they cost
one of each, so the burst is served sooner. A read made alone is sent alone, one event-loop
tick later.

Single-key reads (:meth:`ReadCoalescer.get`, a burst of call starts each reading their digest)
go further: the tick's keys are read by one ``MGET``, one reply parsed in C instead of one
Python-parsed reply per key. On a Redis Cluster, whose ``MGET`` must stay in one hash slot, each
is a ``GET`` of the same pipeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from memory.backend.reply import REDIS_FAILURES
from memory.errors import MemoryUnavailableError

#: Adds one read's commands to a pipeline.
Commands = Callable[[Any], None]


@dataclass(slots=True)
class _Read:
    #: None for a single-key read of ``key``.
    commands: Commands | None
    count: int
    replies: asyncio.Future[list[Any]]
    key: str = ""


class ReadCoalescer:
    """Runs reads of a few commands each, or of one key; reads of one tick share a pipeline.

    Args:
        redis: The client (a cluster client splits the pipeline by node itself).
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._cluster = isinstance(redis, RedisCluster)
        self._waiting: list[_Read] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def __call__(self, commands: Commands, count: int) -> list[Any]:
        """The replies of the ``count`` commands ``commands`` adds; raises what they raised."""
        return await self._wait(commands, count)

    async def get(self, key: str) -> bytes | None:
        """The value of ``key`` (None when there is none); raises what reading it raised."""
        value: bytes | None = (await self._wait(None, 1, key))[0]
        return value

    async def _wait(self, commands: Commands | None, count: int, key: str = "") -> list[Any]:
        loop = asyncio.get_running_loop()
        read = _Read(commands=commands, count=count, replies=loop.create_future(), key=key)
        self._waiting.append(read)
        if len(self._waiting) == 1:
            loop.call_soon(self._send_waiting)
        return await read.replies

    def _send_waiting(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: Sequence[_Read]) -> None:
        replies: list[Any]
        values: list[Any] = []
        try:
            pipe = self._redis.pipeline(transaction=False)
            keys = []
            for read in batch:
                if read.commands is not None:
                    read.commands(pipe)
                elif self._cluster:  # a cluster's MGET must stay in one hash slot
                    pipe.get(read.key)
                else:
                    keys.append(read.key)
            if keys:
                pipe.mget(keys)
            replies = await pipe.execute(raise_on_error=False)
            if keys:
                fetched = replies.pop()
                values = fetched if isinstance(fetched, list) else [fetched] * len(keys)
        except REDIS_FAILURES as e:
            replies = values = [e] * sum(read.count for read in batch)
        except BaseException as e:
            # Anything else (a bug, a cancellation) must still answer every read, or its call
            # would wait for its memory for ever.
            failure = e if isinstance(e, Exception) else MemoryUnavailableError("read cancelled")
            for read in batch:
                if not read.replies.done():
                    read.replies.set_exception(failure)
            if failure is not e:
                raise
            return
        piped, fetched_values = iter(replies), iter(values)
        for read in batch:
            if read.commands is None and not self._cluster:
                mine = [next(fetched_values)]
            else:
                mine = [next(piped) for _ in range(read.count)]
            if read.replies.done():  # the caller stopped waiting
                continue
            error = next((r for r in mine if isinstance(r, BaseException)), None)
            if error is not None:
                read.replies.set_exception(error)
            else:
                read.replies.set_result(mine)
