"""One call (``/dashboard/calls/{caller}/{call}``): analysis, memories changed, transcript."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

from memory.models import CallRecord
from memory.privacy.scrub import scrub_turns
from web.dashboard.context import PREFIX, PageContext


def router(context: PageContext) -> APIRouter:
    """The page of one call."""
    routes = APIRouter(prefix=PREFIX, include_in_schema=False)

    @routes.get("/calls/{caller_key}/{call_id}")
    async def call_page(request: Request, caller_key: str, call_id: str) -> Any:
        session = context.signed_in(request)
        mem = context.need_memory()
        caller = await context.caller_of(mem, caller_key)
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
        return context.render(
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

    return routes


def _report_fields(record: CallRecord) -> list[tuple[str, Any]]:
    """The per-call report's fields, when the record carries one (any pydantic model)."""
    report = getattr(record, "report", None)
    if report is None:
        return []
    data = report.model_dump(mode="json") if isinstance(report, BaseModel) else dict(report)
    return [(name.replace("_", " "), value) for name, value in data.items()]
