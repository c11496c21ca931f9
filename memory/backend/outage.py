"""Redis outages as two log lines: a warning when Redis stops answering, a line when it is back.

Every Redis failure the memory package turns into ``MemoryUnavailableError`` is reported here
(and counted by kind in ``rapport_redis_errors_total``); every reply is too, which ends an
outage. Retries during an outage add to the count, not to the log.
"""

from __future__ import annotations

import time

from loguru import logger
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from memory.metrics import REDIS_ERRORS


def error_kind(error: BaseException) -> str:
    """A bounded label for a Redis failure: timeout, connection, response, cluster or other."""
    if isinstance(error, (RedisTimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(error, (RedisConnectionError, ConnectionError, OSError)):
        return "connection"
    if isinstance(error, ResponseError):
        return "response"
    if isinstance(error, RedisClusterException):
        return "cluster"
    return "other"


class RedisOutage:
    """Whether Redis is answering this process, logging only the changes."""

    def __init__(self) -> None:
        self._down_since: float | None = None
        self._failures = 0

    @property
    def down(self) -> bool:
        """True from the first failure until the next reply."""
        return self._down_since is not None

    def failed(self, error: BaseException) -> None:
        """A Redis command failed: count it; warn once if this starts an outage."""
        kind = error_kind(error)
        REDIS_ERRORS.labels(kind=kind).inc()
        if kind == "response":
            return  # Redis answered: it refused a command, it is not down
        self._failures += 1
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.warning(
                "Redis stopped answering ({}); memory is degraded until it is back", kind
            )

    def answered(self) -> None:
        """A Redis command succeeded: end the outage, if any, with one line."""
        if self._down_since is None:
            return
        lasted = time.monotonic() - self._down_since
        logger.info(
            "Redis is answering again after {:.1f} s ({} failed commands)", lasted, self._failures
        )
        self._down_since = None
        self._failures = 0


#: The process's view of its Redis (one Redis per process: the bot, the worker, the CLI).
REDIS_OUTAGE = RedisOutage()
