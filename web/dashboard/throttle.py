"""Failed dashboard logins, counted per client address and login name.

A wrong password counts against the address and the name it was typed with: five in a minute
block that name from that address (429) until the minute passes, and a right password clears
it. So a colleague mistyping on the office's shared address does not lock anyone else out.
Because the name is free text, an address is also blocked after thirty failures in a minute
whatever the names, so trying passwords under ever new names gains little.

:class:`LoginThrottle` is the interface the login route uses; :class:`InProcessThrottle` keeps
the counts in this process (a shared store can take its place when several processes serve the
dashboard).
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from typing import Protocol

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
