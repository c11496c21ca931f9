"""Exponential backoff with jitter, shared by the analysis retries and the webhook retries."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, *, base: float, cap: float, floor: float | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry).

    Doubles from ``base`` each attempt with "equal jitter" (between half and all of it), so
    workers that failed together do not retry together; never more than ``cap``.

    Args:
        attempt: The retry about to be made, from 1.
        base: The first delay before jitter.
        cap: The longest delay, ``floor`` included.
        floor: A delay the server asked for (``retry-after``): waited at least, up to ``cap``.

    Returns:
        The delay in seconds.
    """
    exponential = base * 2 ** min(attempt - 1, 30)
    delay = exponential * random.uniform(0.5, 1.0)
    return min(cap, max(delay, floor or 0.0))
