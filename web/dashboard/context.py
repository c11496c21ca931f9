"""What every dashboard page shares: access checks, the memory it reads, rendering, the audit list.

Each page's routes live in their own module under :mod:`web.dashboard.pages` and receive one
:class:`PageContext`; this module holds only what more than one page needs. Templates
autoescape, so every caller-originated text (a transcript line, a fact, a name) reaches the page
as text. Callers and calls are addressed by caller key (the keyed hash), never by number.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from bot.callback import CallbackDesk
from memory.models import CONFIDENCE_FLOOR, CallTrust
from memory.privacy.identity import CallerIdentity
from memory.store.audit import AuditAction, AuditEntry, AuditLog
from memory.store.callers import MemoryStore
from memory.store.keys import CallRef
from memory.store.queue import AnalysisQueue
from web.dashboard.access import DashboardAccess
from web.dashboard.access import Session as DashboardSession

PREFIX = "/dashboard"
HERE = Path(__file__).parent
#: Follow-ups or callers per page (a phone screen scrolls through 25 quickly).
PAGE_SIZE = 25
_CALLER_KEY = re.compile(r"v\d+\.[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class DashboardMemory:
    """What the dashboard reads and changes: one agent's memory, queue and audit list.

    Attributes:
        agent_id: The agent whose callers are shown.
        store: The memory store.
        queue: The analysis queue.
        audit: The audit list.
        identify: Turns a typed number into the caller (None: anonymous or not a number).
        callbacks: Calling callers back (None: not offered here).
    """

    agent_id: str
    store: MemoryStore
    queue: AnalysisQueue
    audit: AuditLog
    identify: Callable[[str], CallerIdentity | None]
    callbacks: CallbackDesk | None = None


class StaleFormError(Exception):
    """A form came back without this session's CSRF token: a page left open, or a forgery."""


class PageRouter(APIRouter):
    """The routes of one page, under ``/dashboard``; pages answer ``HEAD`` as they do ``GET``."""

    def __init__(self, *, under: str = "") -> None:
        """Routes at ``/dashboard`` + ``under`` + their own path."""
        super().__init__(prefix=PREFIX + under, include_in_schema=False)

    def page(self, path: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a page: ``GET`` and ``HEAD`` (the same headers, no body) of ``path``."""
        return self.api_route(path, methods=["GET", "HEAD"])


def _templates(zone: tzinfo) -> Environment:
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )

    def when(epoch: float | None) -> str:
        if epoch is None:
            return "-"
        return datetime.fromtimestamp(epoch, tz=UTC).astimezone(zone).strftime("%a %d %b, %H:%M")

    environment.filters["when"] = when
    environment.filters["certainty"] = certainty
    environment.filters["trust"] = lambda trust: _TRUST.get(trust, "not recorded")
    environment.globals["zone"] = str(zone)
    return environment


#: How far a call's caller id could be believed, in a business owner's words.
_TRUST = {
    CallTrust.VERIFIED: "confirmed by the phone network",
    CallTrust.UNVERIFIED: "not confirmed (it could be spoofed)",
    CallTrust.ANONYMOUS: "withheld",
}
#: A fact's confidence from which it counts as sure.
SURE = 0.85


def certainty(confidence: float) -> str:
    """A fact's confidence in words: sure, fairly sure, or unsure (then unused in calls)."""
    if confidence >= SURE:
        return "sure"
    if confidence >= CONFIDENCE_FLOOR:
        return "fairly sure"
    return "unsure, not used in calls"


def back(url: str) -> RedirectResponse:
    """Where a form sends the browser once it is done (303: the next request is a GET)."""
    return RedirectResponse(url, status_code=303)


@dataclass
class PageContext:
    """The checks and helpers every page's routes use.

    Args:
        access: The password and sessions.
        memory: Returns what the pages read (None while memory is not open: pages answer 503).
        zone: The business's time zone: every time on a page is shown in it.
    """

    access: DashboardAccess
    memory: Callable[[], DashboardMemory | None]
    zone: tzinfo = UTC
    _templates: Environment = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._templates = _templates(self.zone)

    def render(
        self, request: Request, name: str, session: DashboardSession | None, **values: Any
    ) -> HTMLResponse:
        """The template ``name`` as a page, with the headers every dashboard page carries."""
        body = self._templates.get_template(name).render(
            prefix=PREFIX,
            user=session.user if session else None,
            csrf=self.access.csrf_token(session) if session else "",
            open_access=self.access.open,
            here=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            **values,
        )
        response = HTMLResponse(body)
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        return response

    def need_memory(self) -> DashboardMemory:
        """What the pages read, or 503 while memory is not open."""
        found = self.memory()
        if found is None:
            raise HTTPException(503, "memory is not available")
        return found

    def signed_in(self, request: Request) -> DashboardSession:
        """The request's session, or a redirect to the login page."""
        session = self.access.session(request)
        if session is None:
            raise HTTPException(303, headers={"Location": f"{PREFIX}/login"})
        return session

    async def posted(self, request: Request) -> tuple[DashboardSession, dict[str, str]]:
        """The session and form of a POST.

        Raises:
            StaleFormError: The form lacks this session's CSRF token (answered with a page
                asking to reload, see :meth:`stale_form`).
        """
        session = self.signed_in(request)
        form = await self.form(request)
        if not self.access.csrf_valid(session, form.get("csrf", "")):
            raise StaleFormError
        return session, form

    @staticmethod
    async def form(request: Request) -> dict[str, str]:
        """A POSTed form, one value per field (the last one of a repeated field)."""
        return {key: str(value) for key, value in (await request.form()).items()}

    def stale_form(self, request: Request, _error: Exception) -> HTMLResponse:
        """The 403 page of a form that lost its CSRF token: reload and try again."""
        response = self.render(request, "stale.html", None)
        response.status_code = 403
        return response

    @staticmethod
    async def caller_of(mem: DashboardMemory, caller_key: str) -> CallerIdentity:
        """The caller a URL names by key (404 for anything that is not a caller key)."""
        # Only well-formed keys reach a Redis key name (no hash-tag braces from a URL).
        if not _CALLER_KEY.fullmatch(caller_key):
            raise HTTPException(404, "no such caller")
        return await mem.store.caller_of(CallRef(mem.agent_id, caller_key, ""))

    @staticmethod
    async def audit(
        mem: DashboardMemory,
        session: DashboardSession,
        action: AuditAction,
        caller: CallerIdentity,
        *,
        call_id: str | None = None,
        fact_id: str | None = None,
    ) -> None:
        """Add what ``session``'s user just did to ``caller`` to the audit list."""
        entry = AuditEntry(
            by=session.user, action=action, caller=caller.masked, call_id=call_id, fact_id=fact_id
        )
        await mem.audit.record(mem.agent_id, entry)
