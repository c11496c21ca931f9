"""The call history (``/dashboard/history``): every kept call, however old, newest first.

Read from the SQL history (:mod:`memory.history`), which keeps calls past Redis's retention;
each call opens on the call page, which reads the history for calls Redis no longer holds.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from memory.errors import HistoryUnavailableError
from memory.history.store import HistoryCall
from memory.models import now
from web.dashboard.context import PAGE_SIZE, PageContext, PageRouter

#: The history's periods, by the name the filter shows.
PERIODS = {"30d": 30 * 86_400.0, "90d": 90 * 86_400.0, "1y": 365 * 86_400.0, "all": None}
DEFAULT_PERIOD = "1y"
#: The lowest urgency the *urgent* filter keeps.
URGENT = 4


def router(context: PageContext) -> PageRouter:
    """The history page, filtered by period and urgency."""
    routes = PageRouter()

    @routes.page("/history")
    async def history_page(
        request: Request, period: str = DEFAULT_PERIOD, urgent: str = "", page: int = 1
    ) -> Any:
        session = context.signed_in(request)
        only_urgent = urgent == "true"
        mem = context.need_memory()
        period = period if period in PERIODS else DEFAULT_PERIOD
        seconds = PERIODS[period]
        number = max(page, 1)
        history = mem.store.history
        calls: list[HistoryCall] = []
        problem = None
        if history is None:
            problem = "The call history is off (RAPPORT_HISTORY_URL=none)."
        else:
            try:
                calls = await history.calls(
                    mem.agent_id,
                    since=now() - seconds if seconds else 0.0,
                    min_urgency=URGENT if only_urgent else None,
                    offset=(number - 1) * PAGE_SIZE,
                    limit=PAGE_SIZE + 1,
                )
            except HistoryUnavailableError:
                problem = "The call history did not answer; try again shortly."
        return context.render(
            request,
            "history.html",
            session,
            calls=calls[:PAGE_SIZE],
            problem=problem,
            period=period,
            periods=list(PERIODS),
            urgent=only_urgent,
            page=number,
            more=len(calls) > PAGE_SIZE,
        )

    return routes
