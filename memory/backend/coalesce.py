"""Coalescing concurrent reads into one Redis pipeline.

When many reads start at once (a burst of incoming calls loading their callers' memory), each
on its own costs a connection, a write, a read and a parse in Python; sent together they cost
one of each, so the burst is served sooner. A read made alone is sent alone, one event-loop
tick later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from memory.backend.reply import REDIS_FAILURES
from memory.errors import MemoryUnavailableError

#: Adds one read's commands to a pipeline.
Commands = Callable[[Any], None]


@dataclass(slots=True)
class _Read:
    commands: Commands
    count: int
    replies: asyncio.Future[list[Any]]


class ReadCoalescer:
    """Runs reads of a few commands each; reads made in the same tick share one pipeline.

    Args:
        redis: The client (a cluster client splits the pipeline by node itself).
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._waiting: list[_Read] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def __call__(self, commands: Commands, count: int) -> list[Any]:
        """The replies of the ``count`` commands ``commands`` adds; raises what they raised."""
        loop = asyncio.get_running_loop()
        read = _Read(commands=commands, count=count, replies=loop.create_future())
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
        try:
            pipe = self._redis.pipeline(transaction=False)
            for read in batch:
                read.commands(pipe)
            replies = await pipe.execute(raise_on_error=False)
        except REDIS_FAILURES as e:
            replies = [e] * sum(read.count for read in batch)
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
        start = 0
        for read in batch:
            mine = replies[start : start + read.count]
            start += read.count
            if read.replies.done():  # the caller stopped waiting
                continue
            error = next((r for r in mine if isinstance(r, BaseException)), None)
            if error is not None:
                read.replies.set_exception(error)
            else:
                read.replies.set_result(mine)
