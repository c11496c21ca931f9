"""The follow-up list: analysed calls the business acts on, filtered by its own fields.

Redis holds the calls of the memory's retention; :func:`older_calls` reads the ones before it
from the call history (:mod:`memory.history`), for lists and figures that reach further back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from memory.analysis.fields import matches
from memory.models import CallRecord, now
from memory.privacy.identity import CallerIdentity
from memory.store.callers import MemoryStore
from memory.store.followup_index import NO_ACTION, FollowUpDone
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


async def older_calls(
    store: MemoryStore,
    agent_id: str,
    *,
    since: float,
    action: str | None = None,
    fields: Mapping[str, str] | None = None,
    follow_ups_only: bool = False,
    limit: int = 500,
) -> list[CallRecord]:
    """The calls of an agent that ended since ``since`` but before Redis's retention, newest first.

    Read from the call history; empty when there is none or Redis reaches back to ``since``.

    Args:
        store: The memory store (its ``history`` and retention horizon).
        agent_id: Whose calls.
        since: Oldest end time included.
        action: Only calls whose analysis chose this action.
        fields: Only calls whose business fields match these values (see :func:`follow_ups`).
        follow_ups_only: Leave out calls that need no action (and unanalysed ones: the history
            does not know which were marked done, so only analysed calls are listed).
        limit: Calls read at most.

    Raises:
        HistoryUnavailableError: The call history did not answer.
    """
    horizon = min(store.horizon, now())
    if store.history is None or since >= horizon:
        return []
    found = await store.history.calls(
        agent_id, since=since, until=horizon, action=action, limit=limit
    )
    return [
        call.record
        for call in found
        if _fields_match(call.record, fields or {})
        and not (
            follow_ups_only
            and (call.record.analysis is None or call.record.analysis.action == NO_ACTION)
        )
    ]


def merged(recent: Sequence[CallRecord], older: Sequence[CallRecord]) -> list[CallRecord]:
    """Redis's calls and the history's older ones, each call once (Redis's copy kept).

    In follow-up order: most urgent, then newest first; unanalysed calls last.
    """
    seen = {record.call_id for record in recent}
    calls = [*recent, *(record for record in older if record.call_id not in seen)]
    return sorted(
        calls,
        key=lambda record: (
            record.analysis is None,
            -(record.analysis.urgency if record.analysis else 0),
            -(record.ended_at or record.started_at),
        ),
    )


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
