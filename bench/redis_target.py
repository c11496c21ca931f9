"""The Redis a benchmark runs against: ``REDIS_URL`` if set, else a throw-away embedded one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from redis.asyncio import Redis

from memory.backend.connect import open_redis


@asynccontextmanager
async def benchmark_redis(prefix: str) -> AsyncIterator[Redis]:
    """A client for the benchmark; with ``REDIS_URL``, keys under ``prefix`` are removed after."""
    redis_url = os.environ.get("REDIS_URL")
    with tempfile.TemporaryDirectory(prefix="rapport-bench-") as data_dir:
        redis, close = await open_redis(
            redis_url=redis_url, data_dir=Path(data_dir), connect_timeout=2, command_timeout=10
        )
        try:
            yield redis
        finally:
            if redis_url:  # never leave benchmark data in somebody's Redis
                async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
                    await redis.unlink(key)
            await close()
