"""Calling a caller back (``/dashboard/callback/{caller}/{call}``) without showing the number.

- *Your phone*: the signed-in person's own phone, entered once and kept per login name.
- *Call back*: Twilio rings that phone, then bridges it to the caller from the business's
  number (:meth:`bot.callback.CallbackDesk.bridge`); the number is used, never shown.
- *Show number*: the caller's number on this page, for this one view.
- *Have Rapport call back*: Rapport itself calls, within business hours, opening with the
  follow-up's reason (:meth:`bot.callback.CallbackDesk.request_agent_callback`).

Each action needs the login and the CSRF token; the last three are written to the audit list
(who, when, the masked caller, the call).
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request

from bot.callback import CallbackDesk, CallbackError
from bot.targets import phone_number
from memory.models import CallRecord
from memory.privacy.identity import CallerIdentity, mask_number
from memory.store.audit import AuditAction
from memory.store.keys import CallRef
from web.dashboard.access import Session
from web.dashboard.context import PREFIX, DashboardMemory, PageContext, PageRouter, back

#: What the page says once an action went through, by the ``done`` query value.
_DONE = {
    "ringing": "Twilio is ringing your phone: answer it to be put through to the caller.",
    "queued": "Rapport will call the caller back (see below).",
    "phone": "Your phone is saved.",
}
_OFF = "Callers' numbers are not kept (RAPPORT_CALLBACK_NUMBERS=false): nobody can be called back."


def router(context: PageContext) -> PageRouter:
    """The call-back page of one follow-up and its four actions."""
    routes = PageRouter(under="/callback")

    async def follow_up(
        caller_key: str, call_id: str
    ) -> tuple[DashboardMemory, CallbackDesk, CallerIdentity, CallRecord]:
        mem = context.need_memory()
        if mem.callbacks is None:
            raise HTTPException(404, "calling back is not offered here")
        caller = await context.caller_of(mem, caller_key)
        (record,) = await mem.store.call_records([CallRef(mem.agent_id, caller.key, call_id)])
        if record is None:
            raise HTTPException(404, "no such call")
        return mem, mem.callbacks, caller, record

    async def page(
        request: Request,
        session: Session,
        caller_key: str,
        call_id: str,
        *,
        error: str | None = None,
        number: str | None = None,
        done: str = "",
    ) -> Any:
        mem, desk, caller, record = await follow_up(caller_key, call_id)
        staff = desk.staff_phones
        phone = await staff.get(mem.agent_id, session.user) if staff is not None else None
        return context.render(
            request,
            "callback.html",
            session,
            caller=caller,
            record=record,
            enabled=desk.enabled,
            kept=await mem.store.sealed_number(caller) is not None,
            staff_phone=mask_number(phone) if phone else None,
            agent_callback=await desk.agent_callbacks.get(caller, call_id),
            number=number,
            error=error,
            done=_DONE.get(done),
        )

    @routes.page("/{caller_key}/{call_id}")
    async def callback_page(request: Request, caller_key: str, call_id: str, done: str = "") -> Any:
        session = context.signed_in(request)
        return await page(request, session, caller_key, call_id, done=done)

    @routes.post("/{caller_key}/{call_id}/phone")
    async def staff_phone_set(request: Request, caller_key: str, call_id: str) -> Any:
        session, form = await context.posted(request)
        mem, desk, caller, _ = await follow_up(caller_key, call_id)
        if desk.staff_phones is None:
            return await page(request, session, caller_key, call_id, error=_OFF)
        try:
            phone = phone_number(form.get("phone", "")[:64])
        except ValueError:
            error = "That is not a phone number: write it with its country code (+34…)."
            return await page(request, session, caller_key, call_id, error=error)
        await desk.staff_phones.set(mem.agent_id, session.user, phone)
        return back(f"{PREFIX}/callback/{caller.key}/{call_id}?done=phone")

    @routes.post("/{caller_key}/{call_id}/bridge")
    async def called_back(request: Request, caller_key: str, call_id: str) -> Any:
        session, _ = await context.posted(request)
        mem, desk, caller, _ = await follow_up(caller_key, call_id)
        staff = desk.staff_phones
        phone = await staff.get(mem.agent_id, session.user) if staff is not None else None
        if phone is None:
            error = "Enter your own phone first: Twilio rings it, then puts you through."
            return await page(request, session, caller_key, call_id, error=error)
        try:
            await desk.bridge(caller, staff_phone=phone)
        except CallbackError as e:
            return await page(request, session, caller_key, call_id, error=str(e))
        await context.audit(mem, session, AuditAction.CALLED_BACK, caller, call_id=call_id)
        return back(f"{PREFIX}/callback/{caller.key}/{call_id}?done=ringing")

    @routes.post("/{caller_key}/{call_id}/number")
    async def number_shown(request: Request, caller_key: str, call_id: str) -> Any:
        session, _ = await context.posted(request)
        mem, desk, caller, _ = await follow_up(caller_key, call_id)
        try:
            number = await desk.number(caller)
        except CallbackError as e:
            return await page(request, session, caller_key, call_id, error=str(e))
        await context.audit(mem, session, AuditAction.NUMBER_SHOWN, caller, call_id=call_id)
        return await page(request, session, caller_key, call_id, number=number)

    @routes.post("/{caller_key}/{call_id}/agent")
    async def agent_callback_requested(request: Request, caller_key: str, call_id: str) -> Any:
        session, form = await context.posted(request)
        mem, desk, caller, _ = await follow_up(caller_key, call_id)
        try:
            await desk.request_agent_callback(
                caller, call_id, by=session.user, reason=form.get("reason", "")
            )
        except CallbackError as e:
            return await page(request, session, caller_key, call_id, error=str(e))
        await context.audit(
            mem, session, AuditAction.AGENT_CALLBACK_REQUESTED, caller, call_id=call_id
        )
        return back(f"{PREFIX}/callback/{caller.key}/{call_id}?done=queued")

    return routes
