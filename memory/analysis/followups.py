"""The follow-up list: analysed calls the business acts on, filtered by its own fields."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from memory.analysis.fields import matches
from memory.models import CallRecord
from memory.privacy.identity import CallerIdentity
from memory.store.callers import MemoryStore
from memory.store.followup_index import FollowUpDone
from memory.store.keys import agent_call_member


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A call on the follow-up list: whose it is, and its record (without the transcript)."""

    caller: CallerIdentity
    record: CallRecord


async def follow_up_page(
    store: MemoryStore,
    agent_id: str,
    *,
    since: float,
    action: str | None = None,
    fields: Mapping[str, str] | None = None,
    offset: int = 0,
    limit: int = 50,
) -> list[FollowUp]:
    """One page of an agent's follow-ups since ``since`` (epoch): most urgent, then newest first.

    Read from the follow-up index (see :mod:`memory.store.followup_index`), so a page costs the same
    however many calls the agent has. Calls done, or whose analysis chose ``none``, are not
    listed; calls not analysed yet (or whose analysis failed) come last.

    Args:
        store: The memory store.
        agent_id: Whose calls.
        since: Oldest end time included.
        action: Only calls whose analysis chose this action (unanalysed calls are left out).
        fields: Only calls whose business fields match each of these values as typed (see
            ``memory.analysis.fields.matches``), e.g. ``{"appointment_type": "cleaning"}``:
            filtered on the page read, so a filtered page may hold fewer than ``limit``.
        offset: Follow-ups skipped (earlier pages).
        limit: Follow-ups read at most.
    """
    refs = await store.followups.page(
        agent_id, since=since, action=action, offset=offset, limit=limit
    )
    records = await store.call_records(refs)
    gone = [
        agent_call_member(ref.caller_key, ref.call_id)
        for ref, record in zip(refs, records, strict=True)
        if record is None
    ]
    # Forgotten or expired meanwhile: the index only ever pointed at them.
    await store.followups.remove(agent_id, gone)
    return [
        FollowUp(
            caller=CallerIdentity(
                agent_id=agent_id, key=ref.caller_key, masked=record.masked_number or ""
            ),
            record=record,
        )
        for ref, record in zip(refs, records, strict=True)
        if record is not None and _fields_match(record, fields or {})
    ]


async def follow_ups(
    store: MemoryStore,
    agent_id: str,
    *,
    since: float,
    action: str | None = None,
    fields: Mapping[str, str] | None = None,
    offset: int = 0,
    limit: int = 50,
) -> list[CallRecord]:
    """The records of :func:`follow_up_page` (same arguments), for lists that need no caller."""
    page = await follow_up_page(
        store, agent_id, since=since, action=action, fields=fields, offset=offset, limit=limit
    )
    return [follow_up.record for follow_up in page]


def _fields_match(record: CallRecord, fields: Mapping[str, str]) -> bool:
    return all(
        record.analysis is not None and matches(record.analysis.fields.get(name), wanted)
        for name, wanted in fields.items()
    )


async def mark_follow_up_done(
    store: MemoryStore, caller: CallerIdentity, call_id: str, *, by: str
) -> FollowUpDone:
    """Take a call off the follow-up list, keeping who did it and when.

    Args:
        store: The memory store.
        caller: Whose call it is.
        call_id: The call.
        by: Who did it (a dashboard user's name).
    """
    return await store.followups.mark_done(caller, call_id, by=by)
