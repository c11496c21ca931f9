"""Redis replies as memory errors: one mapping from what Redis did to what ``memory`` raises."""

from collections.abc import Awaitable
from typing import Any

from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    RedisClusterException,
    RedisError,
    ResponseError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from memory.backend.outage import REDIS_OUTAGE
from memory.errors import (
    MemoryConnectionError,
    MemoryRefusedError,
    MemoryTimeoutError,
    MemoryUnavailableError,
)

#: What a Redis call raises when the server is down, slow or unreachable (a cluster client
#: raises ``RedisClusterException``, outside ``RedisError``, when no node answers).
REDIS_FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)


async def redis_reply(awaitable: Awaitable[Any]) -> Any:
    """Await a Redis reply; a failure becomes :class:`MemoryUnavailableError`.

    The reply is ``Any``: redis-py types replies for every client mode, and Rapport's clients
    are bytes-only (``decode_responses=False``).
    """
    try:
        reply = await awaitable
    except REDIS_FAILURES as e:
        REDIS_OUTAGE.failed(e)
        raise classified(e) from e
    REDIS_OUTAGE.answered()
    return reply


def classified(error: BaseException) -> MemoryUnavailableError:
    """The memory error for a Redis failure, by what happened (not its text: it may quote data).

    Raise it ``from`` the original error.
    """
    if isinstance(error, ResponseError):
        return MemoryRefusedError(f"Redis refused the command ({type(error).__name__})")
    if isinstance(error, (RedisTimeoutError, TimeoutError)):
        return MemoryTimeoutError("Redis did not answer in time")
    if isinstance(error, (RedisConnectionError, OSError)):
        return MemoryConnectionError("Redis could not be reached")
    return MemoryUnavailableError("Redis did not answer")
