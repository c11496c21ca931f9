"""Servers that outlive one test: an event loop of their own, in a thread.

pytest-asyncio gives each test a fresh event loop, and a server started in one test's loop
cannot serve the next test. A module-scoped fixture that shares a bot subprocess (seconds to
start) and the local fakes it talks to runs them in a :class:`BackgroundLoop` instead. Tests
reach them over HTTP and WebSocket as before, and read what the fakes recorded (plain lists).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, Self, TypeVar

T = TypeVar("T")

#: Longer than any start or stop of a bot takes (its own waits are 30 s and 20 s).
WAIT_S = 120


class BackgroundLoop:
    """An event loop running in a thread while ``with`` lasts; what it entered exits with it."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="background-loop", daemon=True
        )
        self._entered = AsyncExitStack()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.run(self._entered.aclose())  # a bot's log check fails the module here
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(WAIT_S)
            self._loop.close()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` in the loop; its result (or its exception) here."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(WAIT_S)

    def enter(self, context: AbstractAsyncContextManager[T]) -> T:
        """Enter ``context`` in the loop; it is exited when the ``with`` block ends."""
        return self.run(self._entered.enter_async_context(context))
