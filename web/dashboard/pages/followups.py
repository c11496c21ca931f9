"""The follow-up list (``/dashboard``) and marking a follow-up done."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from memory.analysis.followups import follow_up_page, mark_follow_up_done
from memory.models import now
from memory.store.audit import AuditAction
from web.dashboard.context import PAGE_SIZE, PREFIX, PageContext, back

#: The follow-up list's periods, by the name the filter shows.
PERIODS = {"24h": 86_400.0, "7d": 7 * 86_400.0, "30d": 30 * 86_400.0, "all": None}
DEFAULT_PERIOD = "30d"


def router(context: PageContext) -> APIRouter:
    """The follow-up list, filtered by action and period, and its *Mark done* button."""
    routes = APIRouter(prefix=PREFIX, include_in_schema=False)

    @routes.get("")
    async def followups_page(
        request: Request, action: str = "", period: str = DEFAULT_PERIOD, page: int = 1
    ) -> Any:
        session = context.signed_in(request)
        mem = context.need_memory()
        period = period if period in PERIODS else DEFAULT_PERIOD
        seconds = PERIODS[period]
        number = max(page, 1)
        items = await follow_up_page(
            mem.store,
            mem.agent_id,
            since=now() - seconds if seconds else 0.0,
            action=action or None,
            offset=(number - 1) * PAGE_SIZE,
            limit=PAGE_SIZE + 1,
        )
        return context.render(
            request,
            "followups.html",
            session,
            items=items[:PAGE_SIZE],
            actions=await mem.store.followups.actions(mem.agent_id),
            action=action,
            period=period,
            periods=list(PERIODS),
            page=number,
            more=len(items) > PAGE_SIZE,
        )

    @routes.post("/calls/{caller_key}/{call_id}/done")
    async def follow_up_done(request: Request, caller_key: str, call_id: str) -> Any:
        session, form = await context.posted(request)
        mem = context.need_memory()
        caller = await context.caller_of(mem, caller_key)
        await mark_follow_up_done(mem.store, caller, call_id, by=session.user)
        await context.audit(mem, session, AuditAction.FOLLOW_UP_DONE, caller, call_id=call_id)
        return back(_local(form.get("next", "")))

    return routes


def _local(url: str) -> str:
    """``url`` when it is a dashboard page of this server, else the follow-up list."""
    path = url.split("?", 1)[0]
    return url if path in (PREFIX, f"{PREFIX}/") and "\\" not in url else PREFIX
