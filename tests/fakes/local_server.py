"""What the HTTP and WebSocket fakes share: an aiohttp app on 127.0.0.1, on an ephemeral port.

A fake subclasses :class:`LocalServer`, adds its routes in :meth:`LocalServer.route`, and is
started and stopped with ``async with``.
"""

from __future__ import annotations

from typing import Self

from aiohttp import web


class LocalServer:
    """An aiohttp app served on 127.0.0.1 while ``async with`` lasts."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.port = 0

    def route(self, app: web.Application) -> None:
        """Add the fake's routes to ``app``."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        app = web.Application()
        self.route(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
