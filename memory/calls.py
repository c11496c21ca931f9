"""The life of a call record after the call: closing and queueing it, and the follow-up list."""

from __future__ import annotations

import asyncio

from memory.models import CallRecord
from memory.store import CallRef, MemoryStore


async def follow_ups(
    store: MemoryStore,
    agent_id: str,
    *,
    since: float,
    action: str | None = None,
    limit: int = 500,
) -> list[CallRecord]:
    """An agent's calls since ``since`` (epoch), most urgent first, newest first within.

    Args:
        store: The memory store.
        agent_id: Whose calls.
        since: Oldest end time included.
        action: Only calls whose analysis chose this action (unanalysed calls are left out).
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
    ]
    records.sort(key=lambda r: r.ended_at or r.started_at, reverse=True)
    records.sort(key=lambda r: r.analysis.urgency if r.analysis else 0, reverse=True)
    return records


async def _record(store: MemoryStore, ref: CallRef) -> CallRecord | None:
    record = await store.get_call(ref.caller, ref.call_id)
    return record.model_copy(update={"transcript": []}) if record else None
