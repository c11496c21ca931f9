"""One call (``/dashboard/calls/{caller}/{call}``): analysis, memories changed, transcript.

A call Redis no longer holds is read from the call history (:mod:`memory.history`).
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request
from pydantic import BaseModel

from memory.errors import HistoryUnavailableError
from memory.models import CallRecord
from memory.privacy.identity import CallerIdentity
from memory.privacy.scrub import scrub_turns
from web.dashboard.context import DashboardMemory, PageContext, PageRouter


def router(context: PageContext) -> PageRouter:
    """The page of one call."""
    routes = PageRouter()

    @routes.page("/calls/{caller_key}/{call_id}")
    async def call_page(request: Request, caller_key: str, call_id: str) -> Any:
        session = context.signed_in(request)
        mem = context.need_memory()
        caller = await context.caller_of(mem, caller_key)
        record = await mem.store.get_call(caller, call_id) or await _kept(mem, caller, call_id)
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


async def _kept(mem: DashboardMemory, caller: CallerIdentity, call_id: str) -> CallRecord | None:
    """The call from the history, when Redis no longer holds it (and it is this caller's)."""
    if mem.store.history is None:
        return None
    try:
        kept = await mem.store.history.call(mem.agent_id, call_id)
    except HistoryUnavailableError as e:
        raise HTTPException(503, "the call history did not answer") from e
    return kept.record if kept is not None and kept.caller.key == caller.key else None


def _report_fields(record: CallRecord) -> list[tuple[str, Any]]:
    """The per-call report's fields, when the record carries one (any pydantic model)."""
    report = getattr(record, "report", None)
    if report is None:
        return []
    data = report.model_dump(mode="json") if isinstance(report, BaseModel) else dict(report)
    return [(name.replace("_", " "), value) for name, value in data.items()]
