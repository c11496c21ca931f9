"""Callers (``/dashboard/callers``): find one by number, their memory and a person's edits.

A caller's export and forget are their own router (:func:`erasure_router`).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import Response

from memory.errors import HistoryUnavailableError, InvalidIdentityError
from memory.models import MAX_TEXT_CHARS, clean_text
from memory.store.audit import AuditAction
from memory.store.corrections import FactRefusedError, UnknownFactError, delete_fact, edit_fact
from web.dashboard.context import PAGE_SIZE, PREFIX, PageContext, PageRouter, back

_MAX_NAME = 80
_ERRORS = {
    "gone": "That fact is no longer stored.",
    "empty": "A fact cannot be empty.",
    "authority": "Refused: the fact claims authority, a discount, free service or an instruction.",
    "secret": "Refused: the fact holds a secret (a card number, a password, …).",
}


def router(context: PageContext) -> PageRouter:
    """The caller list and search, one caller's memory and every change made to it."""
    routes = PageRouter()

    @routes.page("/callers")
    async def callers_page(request: Request, number: str = "", page: int = 1) -> Any:
        session = context.signed_in(request)
        mem = context.need_memory()
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
        return context.render(
            request, "callers.html", session, rows=rows, error=error, page=number_page
        )

    @routes.page("/callers/{caller_key}")
    async def caller_page(request: Request, caller_key: str, error: str = "") -> Any:
        session = context.signed_in(request)
        mem = context.need_memory()
        caller = await context.caller_of(mem, caller_key)
        memory = await mem.store.load(caller)
        facts = sorted(
            await mem.store.all_facts(caller), key=lambda f: f.last_confirmed_at, reverse=True
        )
        if not memory.profile.call_count and not facts and memory.profile.name is None:
            return context.render(request, "caller.html", session, caller=caller, unknown=True)
        texts = {fact.id: fact.text for fact in facts}
        return context.render(
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

    @routes.post("/callers/{caller_key}/facts/{fact_id}")
    async def fact_edited(request: Request, caller_key: str, fact_id: str) -> Any:
        session, form = await context.posted(request)
        mem = context.need_memory()
        caller = await context.caller_of(mem, caller_key)
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
        await context.audit(mem, session, action, caller, fact_id=fact_id)
        return back(url)

    @routes.post("/callers/{caller_key}/name")
    async def name_set(request: Request, caller_key: str) -> Any:
        session, form = await context.posted(request)
        mem = context.need_memory()
        caller = await context.caller_of(mem, caller_key)
        name = clean_text(form.get("name", ""), _MAX_NAME)
        if name:
            await mem.store.set_name(caller, name)
            await context.audit(mem, session, AuditAction.NAME_SET, caller)
        return back(f"{PREFIX}/callers/{caller.key}")

    return routes


def erasure_router(context: PageContext) -> PageRouter:
    """A caller's data given back (export) or forgotten, after a confirmation."""
    routes = PageRouter()

    @routes.page("/callers/{caller_key}/export")
    async def caller_export(request: Request, caller_key: str) -> Any:
        context.signed_in(request)
        mem = context.need_memory()
        caller = await context.caller_of(mem, caller_key)
        try:
            data = await mem.store.export(caller)
        except HistoryUnavailableError as e:
            raise HTTPException(503, "the call history did not answer; try again shortly") from e
        return Response(
            json.dumps(data, indent=2, ensure_ascii=False),
            media_type="application/json",
            headers={
                "Content-Disposition": 'attachment; filename="caller.json"',
                "Cache-Control": "no-store",
            },
        )

    @routes.page("/callers/{caller_key}/forget")
    async def forget_confirmation(request: Request, caller_key: str) -> Any:
        session = context.signed_in(request)
        mem = context.need_memory()
        caller = await context.caller_of(mem, caller_key)
        return context.render(request, "forget.html", session, caller=caller)

    @routes.post("/callers/{caller_key}/forget")
    async def caller_forgotten(request: Request, caller_key: str) -> Any:
        session, form = await context.posted(request)
        mem = context.need_memory()
        caller = await context.caller_of(mem, caller_key)
        if form.get("confirm") != "forget":
            return back(f"{PREFIX}/callers/{caller.key}/forget")
        try:
            await mem.store.forget(caller)
        except HistoryUnavailableError as e:
            # Raised before anything was deleted: the caller is intact, the forget can be redone.
            raise HTTPException(
                503, "the call history did not answer: nothing was forgotten; try again shortly"
            ) from e
        await context.audit(mem, session, AuditAction.CALLER_FORGOTTEN, caller)
        return back(f"{PREFIX}/callers")

    return routes
