"""The dashboard under ``/dashboard``: every page's routes, mounted on an app.

Every page and form reads and writes through :mod:`memory` (the same functions as the CLI);
the page modules (:mod:`web.dashboard.pages`) only check access, parse forms and render
templates, with what :class:`~web.dashboard.context.PageContext` gives them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, tzinfo

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from bot.callback import CallbackDesk
from memory.runtime import MemoryRuntime
from memory.store.audit import AuditLog
from memory.store.queue import AnalysisQueue
from web.dashboard.access import DashboardAccess
from web.dashboard.context import (
    HERE,
    PREFIX,
    DashboardMemory,
    PageContext,
    PageRouter,
    StaleFormError,
)
from web.dashboard.pages import audit, call, callback, callers, followups, history, login, queue

#: Every page's routes, in the order they are matched; a new page is one more entry.
PAGES: tuple[Callable[[PageContext], PageRouter], ...] = (
    login.router,
    followups.router,
    call.router,
    callers.router,
    callers.erasure_router,
    history.router,
    queue.router,
    audit.router,
    callback.router,
)


def dashboard_memory(
    runtime: MemoryRuntime,
    queue: AnalysisQueue,
    *,
    agent_id: str,
    callbacks: CallbackDesk | None = None,
) -> DashboardMemory:
    """What the dashboard of one agent reads, from an open memory runtime and its queue.

    ``callbacks`` offers calling callers back (None: not offered).
    """
    return DashboardMemory(
        agent_id=agent_id,
        store=runtime.store,
        queue=queue,
        audit=AuditLog(runtime.redis, prefix=runtime.settings.key_prefix),
        identify=lambda raw: runtime.identify(raw, agent_id=agent_id),
        callbacks=callbacks,
    )


def dashboard_app(
    *,
    access: DashboardAccess,
    memory: Callable[[], DashboardMemory | None],
    zone: tzinfo = UTC,
) -> FastAPI:
    """A server with only the dashboard (``python runner.py dashboard``, the benchmark)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    add_dashboard_routes(app, access=access, memory=memory, zone=zone)
    return app


def add_dashboard_routes(
    app: FastAPI,
    *,
    access: DashboardAccess,
    memory: Callable[[], DashboardMemory | None],
    zone: tzinfo = UTC,
) -> None:
    """Mount the dashboard (pages at ``/dashboard``, its style sheet at ``/dashboard/static``).

    Args:
        app: The server to add the dashboard to.
        access: The password and sessions.
        memory: Returns what the pages read (None while memory is not open: pages answer 503).
        zone: The business's time zone (:meth:`DashboardSettings.zone`): pages show times in it.
    """
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")
    context = PageContext(access=access, memory=memory, zone=zone)
    app.add_exception_handler(StaleFormError, context.stale_form)
    for page in PAGES:
        app.include_router(page(context))
