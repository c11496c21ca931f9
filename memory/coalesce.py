"""Coalescing concurrent calls of one Redis script into one pipeline.

When many calls start at once (a burst of incoming calls loading their callers' memory), each
script call on its own costs a connection, a write, a read and a parse in Python; sent together
they cost one of each, so the burst is served sooner. A call made alone is sent alone, one
event-loop tick later. Cluster pipelines refuse scripts, so on a cluster the calls are sent
concurrently instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError


@dataclass(slots=True)
class _Call:
    keys: Sequence[Any]
    args: Sequence[Any]
    result: asyncio.Future[Any]


class ScriptCoalescer:
    """Calls one script; calls made in the same event-loop tick share one round trip.

    Args:
        redis: The client the script is registered on.
        script: The registered script.
    """

    def __init__(self, redis: Redis, script: AsyncScript) -> None:
        self._redis = redis
        self._script = script
        self._pipelined = not isinstance(redis, RedisCluster)
        self._waiting: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def __call__(self, *, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run the script with ``keys`` and ``args``; raises what the call raised."""
        loop = asyncio.get_running_loop()
        call = _Call(keys=keys, args=args, result=loop.create_future())
        self._waiting.append(call)
        if len(self._waiting) == 1:
            loop.call_soon(self._send_waiting)
        return await call.result

    def _send_waiting(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            if len(batch) > 1 and self._pipelined:
                pipe = self._redis.pipeline(transaction=False)
                for call in batch:
                    await self._script(keys=call.keys, args=call.args, client=pipe)
                results = await pipe.execute(raise_on_error=False)
            else:
                results = await asyncio.gather(
                    *(self._script(keys=call.keys, args=call.args) for call in batch),
                    return_exceptions=True,
                )
        except (RedisError, OSError, TimeoutError) as e:
            results = [e] * len(batch)
        for call, result in zip(batch, results, strict=True):
            if call.result.done():  # the caller stopped waiting
                continue
            if isinstance(result, BaseException):
                call.result.set_exception(result)
            else:
                call.result.set_result(result)
