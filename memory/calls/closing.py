"""Closing a call: every way a call ends goes through :func:`end_call`."""

from __future__ import annotations

from memory.models import CallRecord
from memory.privacy.identity import CallerIdentity
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue


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
