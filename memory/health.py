"""Is the service healthy: Redis, an analysis worker, the call history, no key refused, the queue.

:func:`check_health` is what ``GET /health`` answers, on the bot and on the standalone worker,
with :func:`with_upstream` adding the cloud services whose key this process had refused.
It costs three Redis commands in two round trips and one ``SELECT 1`` on the call history, each
bounded by a timeout, so it can be polled every few seconds; it also refreshes the queue and
history gauges ``GET /metrics`` serves.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel

from memory.errors import MemoryUnavailableError
from memory.history.store import CallHistory
from memory.metrics import DEAD_LETTERS, HISTORY_UP, QUEUE_DEPTH, REDIS_UP
from memory.models import now
from memory.store.queue import AnalysisQueue
from memory.upstream import UPSTREAM

#: Longest a health check waits for Redis.
CHECK_TIMEOUT_S = 1.0


class ServiceHealth(BaseModel):
    """The answer of ``GET /health``.

    Attributes:
        healthy: Nothing is failing (memory off by configuration is healthy).
        failing: The failing parts, by name: ``redis``, ``analysis_worker``, ``history``, and
            the services whose last attempt was refused (``llm``, ``stt``, ``tts``,
            ``analysis_llm``).
        redis: ``up``, ``down``, or ``off`` when memory is off by configuration.
        history: The call history's database: ``up``, ``down`` (calls wait in the queue until
            it is back), or ``off`` (``RAPPORT_HISTORY_URL=none``, or memory off).
        worker_heartbeat_age_s: Seconds since an analysis worker last reported in (None: none
            has within the heartbeat's lifetime).
        queue_waiting: Analysis jobs not yet taken by a worker.
        queue_pending: Jobs taken and not yet finished.
        dead_letters: Jobs that failed for good (``worker --retry-dead`` queues them again).
        services: Each refused service, with what to check (``refused the key: check
            ANTHROPIC_API_KEY``).
    """

    healthy: bool
    failing: list[str]
    redis: Literal["up", "down", "off"]
    history: Literal["up", "down", "off"] = "off"
    worker_heartbeat_age_s: float | None = None
    queue_waiting: int | None = None
    queue_pending: int | None = None
    dead_letters: int | None = None
    services: dict[str, str] = {}


def with_upstream(health: ServiceHealth) -> ServiceHealth:
    """``health`` with the services whose key this process had refused.

    Any of them makes it unhealthy until that service answers again (per process: see
    :mod:`memory.upstream`).
    """
    refused = UPSTREAM.refused()
    if not refused:
        return health
    return health.model_copy(
        update={"healthy": False, "failing": [*health.failing, *refused], "services": refused}
    )


async def check_health(
    queue: AnalysisQueue | None,
    *,
    heartbeat_max_age: float,
    history: CallHistory | None = None,
    wait_s: float = CHECK_TIMEOUT_S,
) -> ServiceHealth:
    """Check Redis and the analysis worker's heartbeat through the analysis queue, and the history.

    Args:
        queue: The analysis queue; None when memory is off by configuration.
        heartbeat_max_age: Seconds after which a silent worker counts as failing.
        history: The call history; None when it is off.
        wait_s: Longest wait for Redis, and for the history.
    """
    if queue is None:
        return ServiceHealth(healthy=True, failing=[], redis="off")
    history_state = await _history_state(history, wait_s=wait_s)
    history_failing = ["history"] if history_state == "down" else []
    try:
        async with asyncio.timeout(wait_s):
            counts = await queue.counts()
            beat = await queue.last_beat()
    except (MemoryUnavailableError, TimeoutError):
        REDIS_UP.set(0)
        return ServiceHealth(
            healthy=False, failing=["redis", *history_failing], redis="down", history=history_state
        )
    REDIS_UP.set(1)
    QUEUE_DEPTH.labels(state="waiting").set(counts.waiting)
    QUEUE_DEPTH.labels(state="pending").set(counts.pending)
    DEAD_LETTERS.set(counts.dead)
    age = round(max(0.0, now() - beat), 1) if beat is not None else None
    failing = [] if age is not None and age <= heartbeat_max_age else ["analysis_worker"]
    failing += history_failing
    return ServiceHealth(
        healthy=not failing,
        failing=failing,
        redis="up",
        history=history_state,
        worker_heartbeat_age_s=age,
        queue_waiting=counts.waiting,
        queue_pending=counts.pending,
        dead_letters=counts.dead,
    )


async def _history_state(
    history: CallHistory | None, *, wait_s: float
) -> Literal["up", "down", "off"]:
    """``up`` or ``down`` as the history answers within ``wait_s`` (it sets its gauge)."""
    if history is None:
        return "off"
    # Shielded: the first ping also migrates the schema, which must not be cut off half way.
    ping = asyncio.ensure_future(history.ping())
    try:
        async with asyncio.timeout(wait_s):
            answered = await asyncio.shield(ping)
    except TimeoutError:
        HISTORY_UP.set(0)
        answered = False
    return "up" if answered else "down"
