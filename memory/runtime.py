"""Opening memory from settings: one Redis client, the pepper and a store, closed together.

The bot, the analysis worker and the CLI all start here, so they share one Redis (the embedded
server of the data folder, or ``REDIS_URL``) and one pepper.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from redis.asyncio import Redis

from memory.backend.connect import open_redis
from memory.privacy.identity import CallerIdentity, identify, load_pepper
from memory.recall.embeddings import Embedder
from memory.settings import MemorySettings
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue


@dataclass(slots=True)
class MemoryRuntime:
    """A connected store and what is needed to identify callers for it."""

    settings: MemorySettings
    redis: Redis
    store: MemoryStore
    pepper: bytes
    _close: Callable[[], Awaitable[None]]

    def identify(self, raw: str | None, *, agent_id: str) -> CallerIdentity | None:
        """The caller behind a caller id, or None when anonymous."""
        return identify(
            raw, agent_id=agent_id, pepper=self.pepper, default_region=self.settings.default_region
        )

    async def aclose(self) -> None:
        """Close the client (and stop using the embedded server)."""
        await self._close()


async def open_memory(settings: MemorySettings | None = None) -> MemoryRuntime:
    """Connect to the configured Redis and build the store.

    Raises:
        ConfigurationError: The data folder cannot be used (embedded Redis), ``REDIS_URL`` is
            set without ``RAPPORT_PEPPER``, or similar.
        MemoryUnavailableError: The embedded server did not start.
    """
    settings = settings or MemorySettings()
    settings.check_data_dir()
    pepper = load_pepper(
        redis_url=settings.redis_url,
        pepper=settings.pepper,
        data_dir=settings.data_dir,
        pepper_file=settings.pepper_file,
    )
    redis, close = await open_redis(
        redis_url=settings.redis_url,
        data_dir=settings.data_dir,
        connect_timeout=settings.redis_connect_timeout,
        command_timeout=settings.redis_command_timeout,
    )
    store = MemoryStore(
        redis,
        prefix=settings.key_prefix,
        retention_days=settings.retention_days,
        recent_exchanges=settings.recent_exchanges,
        max_facts=settings.max_facts,
        max_text_chars=settings.max_text_chars,
        max_value_bytes=settings.max_value_bytes,
        tombstone_seconds=round(settings.tombstone_hours * 3600),
        erasure_rewrite_s=settings.erasure_rewrite_s,
    )
    return MemoryRuntime(settings=settings, redis=redis, store=store, pepper=pepper, _close=close)


@asynccontextmanager
async def memory_runtime(settings: MemorySettings | None = None) -> AsyncIterator[MemoryRuntime]:
    """:func:`open_memory` as an async context manager."""
    runtime = await open_memory(settings)
    try:
        yield runtime
    finally:
        await runtime.aclose()


def freeze_startup_objects() -> None:
    """Keep what start-up created out of every later garbage collection.

    Call once a process has started (imports, models, clients). Those objects live as long as
    the process, and scanning them made the collector's pauses the tail of call-path latency.
    """
    gc.collect()
    gc.freeze()


@dataclass(slots=True)
class MemoryAccess:
    """The process's memory: the store (via the runtime), the analysis queue, the embedder."""

    runtime: MemoryRuntime
    queue: AnalysisQueue
    embedder: Embedder | None = None
