"""The analysis queue (``/dashboard/queue``): waiting, in flight, dead letters and their retry."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from memory.store.audit import AuditAction
from web.dashboard.context import PREFIX, PageContext, PageRouter, back
from web.dashboard.pages.followups import local

#: Dead letters looked through at most for one call, or retried at once by *Retry all*.
MAX_DEAD_LETTERS = 10_000


def router(context: PageContext) -> PageRouter:
    """The queue page and its *Retry* buttons."""
    routes = PageRouter()

    @routes.page("/queue")
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
            retried = list(await mem.queue.dead_letters(limit=MAX_DEAD_LETTERS))
            await mem.queue.retry_dead(batch=100)
        for letter in retried:
            await context.audit(
                mem, session, AuditAction.DEAD_LETTER_RETRIED, letter.caller, call_id=letter.call_id
            )
        return back(f"{PREFIX}/queue")

    @routes.post("/calls/{caller_key}/{call_id}/retry")
    async def analysis_retried(request: Request, caller_key: str, call_id: str) -> Any:
        """A follow-up card's *Retry*: its call's dead letter is queued again."""
        session, form = await context.posted(request)
        mem = context.need_memory()
        caller = await context.caller_of(mem, caller_key)
        letter = next(
            (
                letter
                for letter in await mem.queue.dead_letters(limit=MAX_DEAD_LETTERS)
                if letter.caller.key == caller.key and letter.call_id == call_id
            ),
            None,
        )
        if letter is not None and await mem.queue.retry_dead_letter(letter.message_id):
            await context.audit(
                mem, session, AuditAction.DEAD_LETTER_RETRIED, caller, call_id=call_id
            )
        return back(local(form.get("next", "")))

    return routes
