"""The dashboard's pages under ``/dashboard``: follow-ups, calls, callers, the queue, the audit.

Every page and form reads and writes through :mod:`memory` (the same functions as the CLI);
this module only checks access, parses forms and renders templates. Templates autoescape, so
every caller-originated text (a transcript line, a fact, a name) reaches the page as text.
Callers and calls are addressed by caller key (the keyed hash), never by number.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel

from memory.analysis.followups import follow_up_page, mark_follow_up_done
from memory.errors import InvalidIdentityError
from memory.models import MAX_TEXT_CHARS, CallRecord, clean_text, now
from memory.privacy.identity import CallerIdentity
from memory.privacy.scrub import scrub_turns
from memory.runtime import MemoryRuntime
from memory.store.audit import AuditAction, AuditEntry, AuditLog
from memory.store.callers import MemoryStore
from memory.store.corrections import FactRefusedError, UnknownFactError, delete_fact, edit_fact
from memory.store.keys import CallRef
from memory.store.queue import AnalysisQueue
from web.dashboard.access import LOGIN_COOKIE, SESSION_COOKIE, SESSION_SECONDS, DashboardAccess
from web.dashboard.access import Session as DashboardSession

PREFIX = "/dashboard"
_HERE = Path(__file__).parent
#: Follow-ups or callers per page (a phone screen scrolls through 25 quickly).
PAGE_SIZE = 25
#: The follow-up list's periods, by the name the filter shows.
PERIODS = {"24h": 86_400.0, "7d": 7 * 86_400.0, "30d": 30 * 86_400.0, "all": None}
DEFAULT_PERIOD = "30d"
_CALLER_KEY = re.compile(r"v\d+\.[0-9a-f]{64}")
_MAX_NAME = 80


@dataclass(frozen=True, slots=True)
class DashboardMemory:
    """What the dashboard reads and changes: one agent's memory, queue and audit list.

    Attributes:
        agent_id: The agent whose callers are shown.
        store: The memory store.
        queue: The analysis queue.
        audit: The audit list.
        identify: Turns a typed number into the caller (None: anonymous or not a number).
    """

    agent_id: str
    store: MemoryStore
    queue: AnalysisQueue
    audit: AuditLog
    identify: Callable[[str], CallerIdentity | None]


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _templates() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(_HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    environment.filters["when"] = _when
    return environment


def _report_fields(record: CallRecord) -> list[tuple[str, Any]]:
    """The per-call report's fields, when the record carries one (any pydantic model)."""
    report = getattr(record, "report", None)
    if report is None:
        return []
    data = report.model_dump(mode="json") if isinstance(report, BaseModel) else dict(report)
    return [(name.replace("_", " "), value) for name, value in data.items()]


def dashboard_router(
    *, access: DashboardAccess, memory: Callable[[], DashboardMemory | None]
) -> APIRouter:
    """The dashboard's routes, to include in an app (they all start with ``/dashboard``).

    Args:
        access: The password and sessions.
        memory: Returns what the pages read (None while memory is not open: pages answer 503).
    """
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    templates = _templates()

    def render(request: Request, name: str, session: DashboardSession | None, **values: Any) -> Any:
        body = templates.get_template(name).render(
            prefix=PREFIX,
            user=session.user if session else None,
            csrf=access.csrf_token(session) if session else "",
            open_access=access.open,
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

    def need_memory() -> DashboardMemory:
        found = memory()
        if found is None:
            raise HTTPException(503, "memory is not available")
        return found

    def signed_in(request: Request) -> DashboardSession:
        session = access.session(request)
        if session is None:
            raise HTTPException(303, headers={"Location": f"{PREFIX}/login"})
        return session

    async def posted(request: Request) -> tuple[DashboardSession, dict[str, str]]:
        """The session and form of a POST, refused (403) without this session's CSRF token."""
        session = signed_in(request)
        form = {key: str(value) for key, value in (await request.form()).items()}
        if not access.csrf_valid(session, form.get("csrf", "")):
            raise HTTPException(403, "missing or wrong CSRF token")
        return session, form

    async def caller_of(mem: DashboardMemory, caller_key: str) -> CallerIdentity:
        # Only well-formed keys reach a Redis key name (no hash-tag braces from a URL).
        if not _CALLER_KEY.fullmatch(caller_key):
            raise HTTPException(404, "no such caller")
        return await mem.store.caller_of(CallRef(mem.agent_id, caller_key, ""))

    def back(url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303)

    async def audit(mem: DashboardMemory, entry: AuditEntry) -> None:
        await mem.audit.record(mem.agent_id, entry)

    # -- access ------------------------------------------------------------------------------

    @router.get("/login")
    async def login_form(request: Request) -> Any:
        nonce = secrets.token_hex(16)
        response = render(request, "login.html", None, login_csrf=access.login_token(nonce))
        access.set_cookie(response, request, LOGIN_COOKIE, nonce, 600)
        return response

    @router.post("/login")
    async def login(request: Request) -> Any:
        client = request.client.host if request.client else "unknown"
        if access.throttled(client):
            return HTMLResponse("Too many failed logins: wait a minute.", status_code=429)
        form = {key: str(value) for key, value in (await request.form()).items()}
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or form.get("csrf", "") != access.login_token(nonce):
            raise HTTPException(403, "missing or wrong CSRF token")
        if access.open:
            return back(PREFIX)
        if not access.check_password(client, form.get("password", "")):
            response = render(
                request,
                "login.html",
                None,
                login_csrf=access.login_token(nonce),
                error="Wrong password.",
            )
            response.status_code = 401
            return response
        user = clean_text(form.get("name", ""), 40) or "dashboard"
        response = back(PREFIX)
        access.set_cookie(
            response, request, SESSION_COOKIE, access.session_cookie(user), SESSION_SECONDS
        )
        response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Any:
        await posted(request)
        response = back(f"{PREFIX}/login")
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    # -- follow-ups --------------------------------------------------------------------------

    @router.get("")
    async def followups_page(
        request: Request, action: str = "", period: str = DEFAULT_PERIOD, page: int = 1
    ) -> Any:
        session = signed_in(request)
        mem = need_memory()
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
        return render(
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

    @router.post("/calls/{caller_key}/{call_id}/done")
    async def follow_up_done(request: Request, caller_key: str, call_id: str) -> Any:
        session, form = await posted(request)
        mem = need_memory()
        caller = await caller_of(mem, caller_key)
        await mark_follow_up_done(mem.store, caller, call_id, by=session.user)
        await audit(
            mem,
            AuditEntry(
                by=session.user,
                action=AuditAction.FOLLOW_UP_DONE,
                caller=caller.masked,
                call_id=call_id,
            ),
        )
        return back(_local(form.get("next", "")))

    # -- one call ----------------------------------------------------------------------------

    @router.get("/calls/{caller_key}/{call_id}")
    async def call_page(request: Request, caller_key: str, call_id: str) -> Any:
        session = signed_in(request)
        mem = need_memory()
        caller = await caller_of(mem, caller_key)
        record = await mem.store.get_call(caller, call_id)
        if record is None:
            raise HTTPException(404, "no such call")
        facts = {fact.id: fact for fact in await mem.store.all_facts(caller)}
        changes = [
            (change, fact_id, facts.get(fact_id))
            for change, ids in (
                ("written", record.facts_written),
                ("confirmed", record.facts_confirmed),
                ("superseded", record.facts_superseded),
            )
            for fact_id in ids
        ]
        return render(
            request,
            "call.html",
            session,
            caller=caller,
            record=record,
            # Scrubbed again for display: a call not analysed yet still holds its raw turns.
            transcript=scrub_turns(record.transcript),
            changes=changes,
            report=_report_fields(record),
            done=await mem.store.followups.done(caller, call_id),
        )

    # -- callers -----------------------------------------------------------------------------

    @router.get("/callers")
    async def callers_page(request: Request, number: str = "", page: int = 1) -> Any:
        session = signed_in(request)
        mem = need_memory()
        error = None
        if number.strip():
            try:
                caller = mem.identify(number[:64])
            except InvalidIdentityError:
                caller = None
            if caller is not None:
                return back(f"{PREFIX}/callers/{caller.key}")
            error = "That is not a phone number (or it is withheld)."
        number_page = max(page, 1)
        rows = await mem.store.list_callers(
            mem.agent_id, offset=(number_page - 1) * PAGE_SIZE, limit=PAGE_SIZE
        )
        return render(request, "callers.html", session, rows=rows, error=error, page=number_page)

    @router.get("/callers/{caller_key}")
    async def caller_page(request: Request, caller_key: str, error: str = "") -> Any:
        session = signed_in(request)
        mem = need_memory()
        caller = await caller_of(mem, caller_key)
        memory = await mem.store.load(caller)
        facts = sorted(
            await mem.store.all_facts(caller), key=lambda f: f.last_confirmed_at, reverse=True
        )
        if not memory.profile.call_count and not facts and memory.profile.name is None:
            return render(request, "caller.html", session, caller=caller, unknown=True)
        texts = {fact.id: fact.text for fact in facts}
        return render(
            request,
            "caller.html",
            session,
            caller=caller,
            unknown=False,
            profile=memory.profile,
            active=[fact for fact in facts if fact.superseded_by is None],
            superseded=[fact for fact in facts if fact.superseded_by is not None],
            replaced_by=texts,
            error=_ERRORS.get(error),
        )

    @router.post("/callers/{caller_key}/facts/{fact_id}")
    async def fact_edited(request: Request, caller_key: str, fact_id: str) -> Any:
        session, form = await posted(request)
        mem = need_memory()
        caller = await caller_of(mem, caller_key)
        url = f"{PREFIX}/callers/{caller.key}"
        try:
            if form.get("delete"):
                await delete_fact(mem.store, caller, fact_id)
                action = AuditAction.FACT_DELETED
            else:
                await edit_fact(mem.store, caller, fact_id, form.get("text", "")[:MAX_TEXT_CHARS])
                action = AuditAction.FACT_EDITED
        except UnknownFactError:
            return back(f"{url}?error=gone")
        except FactRefusedError as e:
            return back(f"{url}?error={e.refusal.value}")
        entry = AuditEntry(by=session.user, action=action, caller=caller.masked, fact_id=fact_id)
        await audit(mem, entry)
        return back(url)

    @router.post("/callers/{caller_key}/name")
    async def name_set(request: Request, caller_key: str) -> Any:
        session, form = await posted(request)
        mem = need_memory()
        caller = await caller_of(mem, caller_key)
        name = clean_text(form.get("name", ""), _MAX_NAME)
        if name:
            await mem.store.set_name(caller, name)
            entry = AuditEntry(by=session.user, action=AuditAction.NAME_SET, caller=caller.masked)
            await audit(mem, entry)
        return back(f"{PREFIX}/callers/{caller.key}")

    @router.get("/callers/{caller_key}/export")
    async def caller_export(request: Request, caller_key: str) -> Any:
        signed_in(request)
        mem = need_memory()
        caller = await caller_of(mem, caller_key)
        data = await mem.store.export(caller)
        return Response(
            json.dumps(data, indent=2, ensure_ascii=False),
            media_type="application/json",
            headers={
                "Content-Disposition": 'attachment; filename="caller.json"',
                "Cache-Control": "no-store",
            },
        )

    @router.get("/callers/{caller_key}/forget")
    async def forget_confirmation(request: Request, caller_key: str) -> Any:
        session = signed_in(request)
        mem = need_memory()
        caller = await caller_of(mem, caller_key)
        return render(request, "forget.html", session, caller=caller)

    @router.post("/callers/{caller_key}/forget")
    async def caller_forgotten(request: Request, caller_key: str) -> Any:
        session, form = await posted(request)
        mem = need_memory()
        caller = await caller_of(mem, caller_key)
        if form.get("confirm") != "forget":
            return back(f"{PREFIX}/callers/{caller.key}/forget")
        await mem.store.forget(caller)
        entry = AuditEntry(
            by=session.user, action=AuditAction.CALLER_FORGOTTEN, caller=caller.masked
        )
        await audit(mem, entry)
        return back(f"{PREFIX}/callers")

    # -- the queue and the audit list --------------------------------------------------------

    @router.get("/queue")
    async def queue_page(request: Request) -> Any:
        session = signed_in(request)
        mem = need_memory()
        return render(
            request,
            "queue.html",
            session,
            counts=await mem.queue.counts(),
            in_flight=await mem.queue.in_flight(),
            dead=await mem.queue.dead_letters(),
        )

    @router.post("/queue/retry")
    async def dead_letters_retried(request: Request) -> Any:
        session, form = await posted(request)
        mem = need_memory()
        message_id = form.get("message_id", "")
        if message_id:
            letters = {letter.message_id: letter for letter in await mem.queue.dead_letters()}
            letter = letters.get(message_id)
            retried = [letter] if letter and await mem.queue.retry_dead_letter(message_id) else []
        else:
            retried = list(await mem.queue.dead_letters(limit=10_000))
            await mem.queue.retry_dead(batch=100)
        for letter in retried:
            entry = AuditEntry(
                by=session.user,
                action=AuditAction.DEAD_LETTER_RETRIED,
                caller=letter.caller.masked,
                call_id=letter.call_id,
            )
            await audit(mem, entry)
        return back(f"{PREFIX}/queue")

    @router.get("/audit")
    async def audit_page(request: Request) -> Any:
        session = signed_in(request)
        mem = need_memory()
        entries = await mem.audit.recent(mem.agent_id, limit=200)
        return render(request, "audit.html", session, entries=entries)

    return router


def _local(url: str) -> str:
    """``url`` when it is a dashboard page of this server, else the follow-up list."""
    path = url.split("?", 1)[0]
    return url if path in (PREFIX, f"{PREFIX}/") and "\\" not in url else PREFIX


_ERRORS = {
    "gone": "That fact is no longer stored.",
    "empty": "A fact cannot be empty.",
    "authority": "Refused: the fact claims authority, a discount, free service or an instruction.",
    "secret": "Refused: the fact holds a secret (a card number, a password, …).",
}


def dashboard_memory(
    runtime: MemoryRuntime, queue: AnalysisQueue, *, agent_id: str
) -> DashboardMemory:
    """What the dashboard of one agent reads, from an open memory runtime and its queue."""
    return DashboardMemory(
        agent_id=agent_id,
        store=runtime.store,
        queue=queue,
        audit=AuditLog(runtime.redis, prefix=runtime.settings.key_prefix),
        identify=lambda raw: runtime.identify(raw, agent_id=agent_id),
    )


def dashboard_app(
    *, access: DashboardAccess, memory: Callable[[], DashboardMemory | None]
) -> FastAPI:
    """A server with only the dashboard (``python runner.py dashboard``, the benchmark)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    add_dashboard_routes(app, access=access, memory=memory)
    return app


def add_dashboard_routes(
    app: FastAPI, *, access: DashboardAccess, memory: Callable[[], DashboardMemory | None]
) -> None:
    """Mount the dashboard (pages at ``/dashboard``, its style sheet at ``/dashboard/static``)."""
    app.mount(f"{PREFIX}/static", StaticFiles(directory=_HERE / "static"), name="dashboard-static")
    app.include_router(dashboard_router(access=access, memory=memory))
