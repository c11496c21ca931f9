"""Failed dashboard logins, counted per client address and login name.

A wrong password counts against the address and the name it was typed with: five in a minute
block that name from that address (429) until the minute passes, and a right password clears
it. So a colleague mistyping on the office's shared address does not lock anyone else out.
Because the name is free text, an address is also blocked after thirty failures in a minute
whatever the names, so trying passwords under ever new names gains little.

:class:`LoginThrottle` is the interface the login route uses; :class:`InProcessThrottle` keeps
the counts in this process; :class:`SharedThrottle` keeps them in Redis too, so every process
serving the dashboard counts the same failures (the bot and ``runner.py dashboard`` use it).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis

from memory.backend.reply import redis_reply
from memory.errors import MemoryUnavailableError

#: Failed logins allowed per address and name per window before 429.
MAX_FAILURES = 5
#: Failed logins allowed per address per window, whatever the names, before 429.
MAX_ADDRESS_FAILURES = 30
FAILURE_WINDOW_SECONDS = 60.0


class LoginThrottle(Protocol):
    """Where failed logins are counted."""

    async def blocked(self, address: str, name: str) -> bool:
        """True when ``name`` may not try to log in from ``address`` right now."""
        ...

    async def failed(self, address: str, name: str) -> None:
        """Count a wrong password typed with ``name`` from ``address``."""
        ...

    async def succeeded(self, address: str, name: str) -> None:
        """Forget the failures of ``name`` from ``address``: they got in."""
        ...


def _recent(failures: deque[float]) -> int:
    """How many of ``failures`` (monotonic times, oldest first) are within the window."""
    cutoff = time.monotonic() - FAILURE_WINDOW_SECONDS
    while failures and failures[0] < cutoff:
        failures.popleft()
    return len(failures)


class InProcessThrottle:
    """Counts failed logins in this process's memory (a restart forgets them)."""

    def __init__(self) -> None:
        self._by_name: defaultdict[tuple[str, str], deque[float]] = defaultdict(deque)
        self._by_address: defaultdict[str, deque[float]] = defaultdict(deque)

    async def blocked(self, address: str, name: str) -> bool:
        """True after too many recent failures of this name, or of this address."""
        pair = (address, name.casefold())
        blocked = (
            _recent(self._by_name[pair]) >= MAX_FAILURES
            or _recent(self._by_address[address]) >= MAX_ADDRESS_FAILURES
        )
        # Nothing kept for whoever has no recent failure: the maps stay as small as the attack.
        if not self._by_name[pair]:
            del self._by_name[pair]
        if not self._by_address[address]:
            del self._by_address[address]
        return blocked

    async def failed(self, address: str, name: str) -> None:
        """Count the failure against the name and against the address."""
        at = time.monotonic()
        self._by_name[(address, name.casefold())].append(at)
        self._by_address[address].append(at)

    async def succeeded(self, address: str, name: str) -> None:
        """Clear the name's failures (the address's count keeps the others')."""
        self._by_name.pop((address, name.casefold()), None)


class SharedThrottle:
    """Counts failed logins in Redis too, so every process serving the dashboard sees them.

    Each count is a sorted set of failure times under a hashed key (neither the address nor the
    name is stored in clear), trimmed to the window and expiring with it. The process keeps its
    own counts as well (:class:`InProcessThrottle`): they decide until the process has Redis,
    and whenever Redis does not answer.

    Args:
        redis: The process's Redis client, once it has one (None: this process's counts only).
        prefix: The key prefix (``RAPPORT_KEY_PREFIX``).
    """

    def __init__(self, redis: Callable[[], Redis | None], *, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._here = InProcessThrottle()

    def _keys(self, address: str, name: str) -> tuple[str, str]:
        """The keys of the name's failures from the address, and of the address's."""
        pair = hashlib.sha256(f"{address}\x1f{name.casefold()}".encode()).hexdigest()[:32]
        alone = hashlib.sha256(address.encode()).hexdigest()[:32]
        head = f"{self._prefix}:dashboard-logins"
        return f"{head}:{pair}", f"{head}:address:{alone}"

    async def blocked(self, address: str, name: str) -> bool:
        """True after too many recent failures of this name, or of this address, anywhere."""
        redis = self._redis()
        if redis is None:
            return await self._here.blocked(address, name)
        cutoff = time.time() - FAILURE_WINDOW_SECONDS
        pipe = redis.pipeline(transaction=False)
        for key in self._keys(address, name):
            pipe.zremrangebyscore(key, "-inf", cutoff)
            pipe.zcard(key)
        try:
            _, by_name, _, by_address = await redis_reply(pipe.execute())
        except MemoryUnavailableError:
            return await self._here.blocked(address, name)
        return by_name >= MAX_FAILURES or by_address >= MAX_ADDRESS_FAILURES

    async def failed(self, address: str, name: str) -> None:
        """Count the failure against the name and against the address, here and in Redis."""
        await self._here.failed(address, name)
        redis = self._redis()
        if redis is None:
            return
        at = time.time()
        failure = f"{at}:{secrets.token_hex(4)}"
        pipe = redis.pipeline(transaction=False)
        for key in self._keys(address, name):
            pipe.zadd(key, {failure: at})
            pipe.expire(key, int(FAILURE_WINDOW_SECONDS) + 1)
        with contextlib.suppress(MemoryUnavailableError):
            await redis_reply(pipe.execute())

    async def succeeded(self, address: str, name: str) -> None:
        """Clear the name's failures, here and in Redis (the address's count keeps the others')."""
        await self._here.succeeded(address, name)
        redis = self._redis()
        if redis is None:
            return
        with contextlib.suppress(MemoryUnavailableError):
            await redis_reply(redis.delete(self._keys(address, name)[0]))
