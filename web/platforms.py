"""Mounting the platform endpoints on the server's app: Vapi and the ``/v1`` HTTP API.

Each is mounted only when its secret is set (``RAPPORT_VAPI_SECRET``, ``RAPPORT_API_KEY``), and
then shows in the app's OpenAPI docs (``/docs``).
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from loguru import logger

from memory.calls.session import CallSession, SessionCache
from web.platform_api import platform_router
from web.platform_calls import PlatformCalls
from web.vapi import vapi_router


def add_platform_routes(app: FastAPI, calls: PlatformCalls) -> list[str]:
    """Mount the endpoints whose secret is set; the names of those mounted.

    Args:
        app: The server's app (the runner's, before ``main()`` adds its own routes).
        calls: The agent, the process's memory and Anthropic client.
    """
    mounted = []
    if calls.settings.vapi_secret:
        vapi_calls: SessionCache[asyncio.Task[CallSession]] = SessionCache()
        app.include_router(vapi_router(calls, cache=vapi_calls))
        mounted.append("vapi")
    if calls.settings.api_key:
        app.include_router(platform_router(calls, cache=SessionCache()))
        mounted.append("api")
    if mounted:
        logger.info("Platform endpoints served: {}", ", ".join(mounted))
    return mounted
