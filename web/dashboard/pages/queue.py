"""The analysis queue (``/dashboard/queue``): waiting, in flight, dead letters and their retry."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from memory.store.audit import AuditAction
from web.dashboard.context import PREFIX, PageContext, back


def router(context: PageContext) -> APIRouter:
    """The queue page and its *Retry* buttons."""
    routes = APIRouter(prefix=PREFIX, include_in_schema=False)

    @routes.get("/queue")
    async def queue_page(request: Request) -> Any:
        session = context.signed_in(request)
        mem = context.need_memory()
        return context.render(
            request,
            "queue.html",
            session,
            counts=await mem.queue.counts(),
            in_flight=await mem.queue.in_flight(),
            dead=await mem.queue.dead_letters(),
        )

    @routes.post("/queue/retry")
    async def dead_letters_retried(request: Request) -> Any:
        session, form = await context.posted(request)
        mem = context.need_memory()
        message_id = form.get("message_id", "")
        if message_id:
            letters = {letter.message_id: letter for letter in await mem.queue.dead_letters()}
            letter = letters.get(message_id)
            retried = [letter] if letter and await mem.queue.retry_dead_letter(message_id) else []
        else:
            retried = list(await mem.queue.dead_letters(limit=10_000))
            await mem.queue.retry_dead(batch=100)
        for letter in retried:
            await context.audit(
                mem, session, AuditAction.DEAD_LETTER_RETRIED, letter.caller, call_id=letter.call_id
            )
        return back(f"{PREFIX}/queue")

    return routes
