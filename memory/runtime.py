"""Opening memory from settings: one Redis client, the pepper, the call history and a store.

The bot, the analysis worker and the CLI all start here, so they share one Redis (the embedded
server of the data folder, or ``REDIS_URL``), one pepper and one call history
(``RAPPORT_HISTORY_URL``), closed together.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from redis.asyncio import Redis

from memory.backend.connect import open_redis
from memory.history.store import CallHistory, history_database_url
from memory.privacy.identity import CallerIdentity, identify, load_pepper, normalize_number
from memory.privacy.numbers import NumberVault, load_number_vault
from memory.recall.embeddings import Embedder
from memory.settings import MemorySettings
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue


@dataclass(slots=True)
class MemoryRuntime:
    """A connected store and what is needed to identify callers for it.

    ``numbers`` seals callers' numbers for calling back; None when that is off
    (``RAPPORT_CALLBACK_NUMBERS=false``).
    """

    settings: MemorySettings
    redis: Redis
    store: MemoryStore
    pepper: bytes
    _close: Callable[[], Awaitable[None]]
    numbers: NumberVault | None = None

    def identify(self, raw: str | None, *, agent_id: str) -> CallerIdentity | None:
        """The caller behind a caller id, or None when anonymous."""
        return identify(
            raw, agent_id=agent_id, pepper=self.pepper, default_region=self.settings.default_region
        )

    def sealed_number(self, raw: str | None, caller: CallerIdentity) -> bytes | None:
        """``caller``'s number sealed for storage, from the raw caller id the call came with.

        None when numbers are not kept, or the caller id is not a number.
        """
        if self.numbers is None:
            return None
        e164 = normalize_number(raw, default_region=self.settings.default_region)
        return None if e164 is None else self.numbers.seal(e164, bound_to=caller.hash_tag)

    async def callback_number(self, caller: CallerIdentity) -> str | None:
        """The number to call ``caller`` back on (E.164), or None when there is none to open.

        Never log it: it is for placing a call, or for showing to the person who asked.
        """
        if self.numbers is None:
            return None
        sealed = await self.store.sealed_number(caller)
        return None if sealed is None else self.numbers.open(sealed, bound_to=caller.hash_tag)

    async def aclose(self) -> None:
        """Close the client (and stop using the embedded server)."""
        await self._close()


async def open_memory(settings: MemorySettings | None = None) -> MemoryRuntime:
    """Connect to the configured Redis and build the store.

    The call history connects on first use: a database that is down does not stop the start.

    Raises:
        ConfigurationError: The data folder cannot be used (embedded Redis), ``REDIS_URL`` is
            set without ``RAPPORT_PEPPER``, the number key file cannot be read, a bad
            ``RAPPORT_HISTORY_URL``, or similar.
        MemoryUnavailableError: The embedded server did not start.
    """
    settings = settings or MemorySettings()
    settings.check_data_dir()
    history_url = history_database_url(settings.history_url, data_dir=settings.data_dir)
    pepper = load_pepper(
        redis_url=settings.redis_url,
        pepper=settings.pepper,
        data_dir=settings.data_dir,
        pepper_file=settings.pepper_file,
    )
    numbers = load_number_vault(settings.number_key_file) if settings.callback_numbers else None
    redis, close_redis = await open_redis(
        redis_url=settings.redis_url,
        data_dir=settings.data_dir,
        connect_timeout=settings.redis_connect_timeout,
        command_timeout=settings.redis_command_timeout,
    )
    tombstone_seconds = round(settings.tombstone_hours * 3600)
    history = (
        CallHistory(
            history_url,
            retention_days=settings.history_retention_days,
            tombstone_seconds=tombstone_seconds,
        )
        if history_url
        else None
    )

    async def close() -> None:
        try:
            await close_redis()
        finally:
            if history is not None:
                await history.aclose()

    store = MemoryStore(
        redis,
        prefix=settings.key_prefix,
        retention_days=settings.retention_days,
        recent_exchanges=settings.recent_exchanges,
        max_facts=settings.max_facts,
        max_text_chars=settings.max_text_chars,
        max_value_bytes=settings.max_value_bytes,
        tombstone_seconds=tombstone_seconds,
        erasure_rewrite_s=settings.erasure_rewrite_s,
        history=history,
    )
    return MemoryRuntime(
        settings=settings, redis=redis, store=store, pepper=pepper, _close=close, numbers=numbers
    )


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
