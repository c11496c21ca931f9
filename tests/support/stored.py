"""What a test's Redis holds: every key under a prefix whose name or value holds some text."""

from __future__ import annotations

from redis.asyncio import Redis


async def keys_holding(redis: Redis, prefix: str, needles: tuple[str, ...]) -> set[bytes]:
    """Every key under ``prefix`` (queue included) whose name or value holds one of ``needles``."""
    found = set()
    async for key in redis.scan_iter(match=f"{prefix}:*"):
        kind = (await redis.type(key)).decode()
        if kind == "hash":
            values = [v for pair in (await redis.hgetall(key)).items() for v in pair]
        elif kind == "list":
            values = await redis.lrange(key, 0, -1)
        elif kind == "zset":
            values = await redis.zrange(key, 0, -1)
        elif kind == "set":
            values = list(await redis.smembers(key))
        elif kind == "stream":
            values = [v for _, f in await redis.xrange(key) for pair in f.items() for v in pair]
        else:
            values = [await redis.get(key) or b""]
        text = b"\n".join([key, *values]).decode("utf-8", "replace")
        if any(needle in text for needle in needles):
            found.add(key)
    return found
