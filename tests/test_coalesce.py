"""ReadCoalescer: reads of one tick share a pipeline, and every read is answered, whatever fails."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.exceptions import RedisClusterException, ResponseError

from memory.backend.coalesce import ReadCoalescer
from memory.errors import MemoryUnavailableError


class FakePipeline:
    """Records commands; ``execute`` answers each with its name or runs ``behaviour``."""

    def __init__(self, client: FakeRedis) -> None:
        self._client = client
        self.commands: list[str] = []

    def get(self, key: str) -> None:
        self.commands.append(key)

    def mget(self, keys: list[str]) -> None:
        self.commands.append("MGET " + " ".join(keys))

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        self._client.executed.append(self.commands)
        if self._client.behaviour is not None:
            return await self._client.behaviour(self.commands)
        return [_reply(command) for command in self.commands]


def _reply(command: str) -> Any:
    """A key's value is its name; a key named ``bad…`` fails (an MGET of one fails it whole)."""
    if command.startswith("MGET "):
        keys = command.split()[1:]
        return ResponseError("bad") if any(k.startswith("bad") for k in keys) else keys
    return ResponseError(command) if command.startswith("bad") else command


class FakeRedis:
    def __init__(self, behaviour: Callable[[list[str]], Any] | None = None) -> None:
        self.behaviour = behaviour
        self.executed: list[list[str]] = []

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)


def coalescer(client: FakeRedis) -> ReadCoalescer:
    redis: Any = client  # stands in for the Redis client: only pipeline() is used
    return ReadCoalescer(redis)


def read(*keys: str) -> Callable[[Any], None]:
    def commands(pipe: Any) -> None:
        for key in keys:
            pipe.get(key)

    return commands


async def test_reads_of_one_tick_share_one_pipeline() -> None:
    client = FakeRedis()
    reads = coalescer(client)
    first, second = await asyncio.gather(reads(read("a", "b"), 2), reads(read("c"), 1))
    assert (first, second) == (["a", "b"], ["c"])
    assert client.executed == [["a", "b", "c"]]


async def test_single_key_reads_of_one_tick_share_one_mget_beside_the_other_reads() -> None:
    client = FakeRedis()
    reads = coalescer(client)
    results = await asyncio.gather(
        reads.get("a"), reads(read("b", "c"), 2), reads.get("d"), reads(read("e"), 1)
    )
    assert results == ["a", ["b", "c"], "d", ["e"]]
    assert client.executed == [["b", "c", "e", "MGET a d"]]


async def test_a_failed_mget_fails_its_keys_reads_only() -> None:
    reads = coalescer(FakeRedis())
    results = await asyncio.gather(
        reads.get("a"), reads.get("bad"), reads(read("c"), 1), return_exceptions=True
    )
    assert isinstance(results[0], ResponseError) and isinstance(results[1], ResponseError)
    assert results[2] == ["c"]


async def test_an_error_reply_fails_only_its_own_read() -> None:
    reads = coalescer(FakeRedis())
    results = await asyncio.gather(
        reads(read("a", "bad"), 2), reads(read("c"), 1), return_exceptions=True
    )
    assert isinstance(results[0], ResponseError)
    assert results[1] == ["c"]


@pytest.mark.parametrize(
    "error",
    [RedisClusterException("no node answered"), ConnectionError("gone"), ValueError("a bug")],
)
async def test_any_exception_answers_every_pending_read(error: Exception) -> None:
    async def fail(_commands: list[str]) -> list[Any]:
        raise error

    reads = coalescer(FakeRedis(fail))
    results = await asyncio.wait_for(
        asyncio.gather(
            reads(read("a"), 1), reads(read("b"), 1), reads.get("c"), return_exceptions=True
        ),
        timeout=1,
    )
    assert all(type(result) is type(error) for result in results)


async def test_a_cancelled_send_answers_every_pending_read() -> None:
    async def cancelled(_commands: list[str]) -> list[Any]:
        raise asyncio.CancelledError

    reads = coalescer(FakeRedis(cancelled))
    results = await asyncio.wait_for(
        asyncio.gather(reads(read("a"), 1), reads(read("b"), 1), return_exceptions=True),
        timeout=1,
    )
    assert all(isinstance(result, MemoryUnavailableError) for result in results)


async def test_a_failing_commands_callback_answers_every_read() -> None:
    def broken(_pipe: Any) -> None:
        raise KeyError("not a command")

    reads = coalescer(FakeRedis())
    results = await asyncio.wait_for(
        asyncio.gather(reads(broken, 1), reads(read("b"), 1), return_exceptions=True), timeout=1
    )
    assert all(isinstance(result, KeyError) for result in results)


async def test_a_reader_that_stopped_waiting_does_not_disturb_the_others() -> None:
    release = asyncio.Event()

    async def slow(commands: list[str]) -> list[Any]:
        await release.wait()
        return list(commands)

    reads = coalescer(FakeRedis(slow))
    gone = asyncio.ensure_future(reads(read("a"), 1))
    kept = asyncio.ensure_future(reads(read("b"), 1))
    await asyncio.sleep(0.01)
    gone.cancel()
    release.set()
    assert await kept == ["b"]
    with pytest.raises(asyncio.CancelledError):
        await gone
