"""The life of a call record after the call: closing and queueing it, and the follow-up list."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from memory.fields import matches
from memory.identity import CallerIdentity
from memory.keys import CallRef
from memory.models import CallRecord
from memory.queue import AnalysisQueue
from memory.store import MemoryStore


async def end_call(
    store: MemoryStore, queue: AnalysisQueue, caller: CallerIdentity, record: CallRecord
) -> bool:
    """Close a call that just ended and queue it for analysis: every end path calls this.

    The call is noted as closing first, so a process that dies between closing the record and
    queueing the job leaves a note the worker's sweeper finishes; only the first closer of a
    call queues it (closing is idempotent by call id).

    Args:
        store: Where the call's turns are.
        queue: The analysis queue.
        caller: The caller (never anonymous: anonymous calls are not stored).
        record: The ended call (ids, timings, ended reason); its transcript is stored already.

    Returns:
        True when this call closed the record and queued it; False when it was closed already.

    Raises:
        MemoryUnavailableError: Redis did not answer.
    """
    await queue.note_closing(caller, record.call_id)
    if record.masked_number is None:
        record = record.model_copy(update={"masked_number": caller.masked})
    if not await store.close_call(caller, record):
        return False
    await queue.enqueue(caller, record.call_id)
    return True


async def follow_ups(
    store: MemoryStore,
    agent_id: str,
    *,
    since: float,
    action: str | None = None,
    fields: Mapping[str, str] | None = None,
    limit: int = 500,
) -> list[CallRecord]:
    """An agent's calls since ``since`` (epoch), most urgent first, newest first within.

    Args:
        store: The memory store.
        agent_id: Whose calls.
        since: Oldest end time included.
        action: Only calls whose analysis chose this action (unanalysed calls are left out).
        fields: Only calls whose business fields match each of these values as typed (see
            ``memory.fields.matches``), e.g. ``{"appointment_type": "cleaning"}``.
        limit: Calls looked at, newest first.

    Returns:
        Call records without transcripts; calls not yet analysed (or failed) come last.
    """
    refs = await store.recent_calls(agent_id, since=since, limit=limit)
    records = [
        record
        for record in await asyncio.gather(*(_record(store, ref) for ref in refs))
        if record is not None
        and (action is None or (record.analysis is not None and record.analysis.action == action))
        and all(
            record.analysis is not None and matches(record.analysis.fields.get(name), wanted)
            for name, wanted in (fields or {}).items()
        )
    ]
    records.sort(key=lambda r: r.ended_at or r.started_at, reverse=True)
    records.sort(key=lambda r: r.analysis.urgency if r.analysis else 0, reverse=True)
    return records


async def _record(store: MemoryStore, ref: CallRef) -> CallRecord | None:
    record = await store.get_call(ref.caller, ref.call_id)
    return record.model_copy(update={"transcript": []}) if record else None
