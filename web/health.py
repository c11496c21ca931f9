"""``GET /health`` and ``GET /metrics``, on the bot's server and on the standalone worker.

``/health`` answers 200 when Redis answers, an analysis worker's heartbeat is fresh and no cloud
service refused this process's key, 503 naming the failing part otherwise; both carry the
queue's depth and dead letters (:class:`memory.health.ServiceHealth`). ``/metrics`` serves
:data:`memory.metrics.REGISTRY` in Prometheus' text format. Neither names a caller (no numbers,
no call ids), so both may stay open; with ``RAPPORT_METRICS_TOKEN`` set, ``/metrics`` requires
``Authorization: Bearer …``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import uvicorn
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from memory.health import ServiceHealth, with_upstream
from memory.metrics import REGISTRY
from memory.settings import MemorySettings
from web.auth import require_secret

#: What answers a health check (the bot's or the worker's view of its memory).
HealthCheck = Callable[[], Awaitable[ServiceHealth]]


def metrics_bearer_token(settings: MemorySettings) -> str | None:
    """The bearer token ``/metrics`` requires (``RAPPORT_METRICS_TOKEN``), or None: open."""
    token = settings.metrics_token.get_secret_value().strip() if settings.metrics_token else ""
    return token or None


def health_router(*, check: HealthCheck, metrics_token: str | None = None) -> APIRouter:
    """The ``/health`` and ``/metrics`` routes.

    Args:
        check: Runs one health check (it also refreshes the queue gauges).
        metrics_token: When set, ``/metrics`` requires it as a bearer token.
    """
    router = APIRouter()
    # A machine secret like the platform doors' (web.auth): one check, one 401 challenge.
    guard = [Depends(require_secret(metrics_token, realm="metrics"))] if metrics_token else []

    @router.get("/health")
    async def health() -> JSONResponse:
        result = with_upstream(await check())
        status = 200 if result.healthy else 503
        return JSONResponse(result.model_dump(mode="json"), status_code=status)

    @router.get("/metrics", dependencies=guard)
    async def metrics() -> Response:
        await check()  # the queue gauges are read from Redis at scrape time
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return router


async def serve_health(
    *, check: HealthCheck, host: str, port: int, stop: asyncio.Event, metrics_token: str | None
) -> None:
    """Serve ``/health`` and ``/metrics`` on ``host:port`` until ``stop`` is set (the worker's).

    Raises:
        OSError: The port cannot be bound.
    """
    app = FastAPI(title="Rapport worker", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(health_router(check=check, metrics_token=metrics_token))
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    )
    # The worker handles SIGINT/SIGTERM itself (and sets ``stop``): uvicorn must not take them.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve(), name="worker-health")
    try:
        await stop.wait()
    finally:
        server.should_exit = True
        await task
