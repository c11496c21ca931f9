"""The audit list (``/dashboard/audit``): every change a person made here, newest first."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from web.dashboard.context import PageContext, PageRouter


def router(context: PageContext) -> PageRouter:
    """The audit page."""
    routes = PageRouter()

    @routes.page("/audit")
    async def audit_page(request: Request) -> Any:
        session = context.signed_in(request)
        mem = context.need_memory()
        entries = await mem.audit.recent(mem.agent_id, limit=200)
        return context.render(request, "audit.html", session, entries=entries)

    return routes
