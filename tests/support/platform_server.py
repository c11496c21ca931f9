"""Serving the platform endpoints for tests and benchmarks: a real server on a loopback port.

``serving(app)`` runs the app under uvicorn in the test's own event loop, so real clients (the
official ``openai`` SDK, httpx) reach it over TCP, streaming included.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from anthropic import AsyncAnthropic
from fastapi import FastAPI

from bot.settings import BotSettings
from bot.wording import prompt_template
from memory.runtime import MemoryAccess
from web.platform_calls import PlatformCalls
from web.platforms import add_platform_routes

VAPI_SECRET = "vapi-secret-for-tests-0123456789"
API_KEY = "rapport-api-key-for-tests-0123456789"


def platform_app(
    settings: BotSettings, *, memory: MemoryAccess | None, client: AsyncAnthropic
) -> FastAPI:
    """An app serving the platform endpoints, as ``runner.py`` mounts them."""
    app = FastAPI()
    calls = PlatformCalls(
        settings=settings,
        prompt_template=prompt_template(settings),
        memory=lambda: memory,
        anthropic=lambda: client,
    )
    add_platform_routes(app, calls)
    return app


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (ephemeral port) until the block ends; its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                await task  # raises what stopped it
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
