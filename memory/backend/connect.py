"""Connecting to a Redis: a URL (plain, TLS, unix socket or Redis Cluster) or the embedded server.

Every client is made here, with the same fast-failing retries and the caller's timeouts, so the
bot, the worker, the CLI and the benchmarks all degrade the same way when Redis is slow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, cast

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff

from memory.backend.embedded import EmbeddedRedis


def client_from_url(
    url: str, *, connect_timeout: float, command_timeout: float
) -> redis.asyncio.Redis:
    """Create an asyncio client for ``url`` that gives up quickly on a dead server.

    redis-py 8 retries a failed command 10 times with up to 1 s of backoff each; a call must
    degrade to "no memory" instead, so this client retries a connection error twice within
    ~0.1 s (enough to replace a pooled connection the server closed). Timeouts are not retried:
    asking a slow server again does not help, and a timed-out write may have been applied.

    A ``redis+cluster://`` (or ``rediss+cluster://``) URL names any node of a Redis Cluster and
    gives a cluster client; every caller's keys share one hash tag, so the store runs unchanged.

    Args:
        url: ``redis://``, ``rediss://``, ``unix://`` or ``redis+cluster://`` URL.
        connect_timeout: Seconds to wait for a connection.
        command_timeout: Seconds to wait for a reply.

    Returns:
        A client returning bytes (``decode_responses=False``); close it with ``aclose()``.

    """
    retry = AsyncRetry(
        ExponentialBackoff(cap=0.05, base=0.01), 2, supported_errors=(redis.ConnectionError,)
    )
    scheme, _, rest = url.partition("://")
    if scheme in CLUSTER_SCHEMES:
        cluster: Any = RedisCluster.from_url(
            f"{CLUSTER_SCHEMES[scheme]}://{rest}",
            socket_connect_timeout=connect_timeout,
            socket_timeout=command_timeout,
            retry=retry,
        )
        return cast(redis.asyncio.Redis, cluster)
    return redis.asyncio.from_url(
        url, socket_connect_timeout=connect_timeout, socket_timeout=command_timeout, retry=retry
    )


def display_url(url: str) -> str:
    """``url`` fit for a log line: any password (or user and password) replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    credentials, at, host = authority.rpartition("@")
    if not at:
        return url
    user = credentials.partition(":")[0] if ":" in credentials else ""
    return f"{scheme}{sep}{user + ':' if user else ''}***@{host}{slash}{path}"


#: URL schemes that name a Redis Cluster, and the plain scheme each stands for.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
#: Every scheme ``REDIS_URL`` may have.
URL_SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)


async def open_redis(
    *,
    redis_url: str | None,
    data_dir: Path,
    connect_timeout: float,
    command_timeout: float,
    supervise: bool = True,
) -> tuple[redis.asyncio.Redis, Callable[[], Awaitable[None]]]:
    """Connect to ``redis_url``, or to the embedded server of ``data_dir`` when it is unset.

    The client returns bytes (``decode_responses=False``). Connections are made lazily, so an
    unreachable ``redis_url`` surfaces on the first command, not here.

    Args:
        redis_url: ``REDIS_URL`` (``redis://``, ``rediss://`` or ``unix://``), or None.
        data_dir: The embedded server's data directory (used only without ``redis_url``).
        connect_timeout: Seconds to wait for a connection.
        command_timeout: Seconds to wait for a reply.
        supervise: Relaunch the embedded server whenever it dies, until closed (see
            :meth:`EmbeddedRedis.supervise`).

    Returns:
        The client and a coroutine function that closes it and, for the embedded server, stops
        using it (see :meth:`EmbeddedRedis.stop`). Call the closer exactly once.

    Raises:
        ConfigurationError: See :meth:`EmbeddedRedis.start`.
        MemoryUnavailableError: The embedded server did not start.

    """
    embedded: EmbeddedRedis | None = None
    supervisor: asyncio.Task[None] | None = None
    if not redis_url:
        embedded = EmbeddedRedis(data_dir=data_dir)
        await asyncio.to_thread(embedded.start)
        redis_url = embedded.url
        if supervise:
            supervisor = asyncio.create_task(embedded.supervise(), name="embedded-redis")
    client = client_from_url(
        redis_url, connect_timeout=connect_timeout, command_timeout=command_timeout
    )

    async def close() -> None:
        try:
            if supervisor is not None:
                supervisor.cancel()
                with suppress(asyncio.CancelledError):
                    await supervisor
            await client.aclose()
        finally:
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)

    return client, close
