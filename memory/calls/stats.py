"""Many calls' reports summarised: the figures ``calls stats`` prints."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel

from memory.models import CallRecord, CallStatus
from memory.report import percentile


def _ms(value: float) -> float:
    return round(value, 2)


class CallStats(BaseModel):
    """One agent's calls over a period, summarised (``calls stats``).

    Costs are in ``currency``; calls without a report count as calls and minutes but add no
    cost and no latencies (``reported`` says how many had one).
    """

    calls: int
    reported: int
    minutes: float
    currency: str | None
    cost: float
    cost_per_call: float | None
    cost_per_minute: float | None
    voice_to_voice_p50_ms: float | None
    voice_to_voice_p95_ms: float | None
    memory_load_p99_ms: float | None
    analyses_failed: int


def summarise(records: Iterable[CallRecord]) -> CallStats:
    """Aggregate the reports of ``records`` (latencies pooled over every turn of every call)."""
    records = list(records)
    reports = [r.report for r in records if r.report is not None]
    seconds = sum(
        r.report.duration_s
        if r.report is not None
        else max(0.0, (r.ended_at or r.started_at) - r.started_at)
        for r in records
    )
    minutes = seconds / 60
    cost = sum(report.cost.total for report in reports)
    currencies = {report.cost.currency for report in reports}
    turns = [
        turn.voice_to_voice_ms
        for report in reports
        for turn in report.turns
        if turn.voice_to_voice_ms is not None
    ]
    loads = [
        report.memory.load_ms
        for report in reports
        if report.memory is not None and report.memory.load_ms is not None
    ]
    return CallStats(
        calls=len(records),
        reported=len(reports),
        minutes=round(minutes, 2),
        currency=", ".join(sorted(currencies)) or None,
        cost=round(cost, 6),
        cost_per_call=round(cost / len(reports), 6) if reports else None,
        cost_per_minute=round(cost / minutes, 6) if reports and minutes else None,
        voice_to_voice_p50_ms=_ms(percentile(turns, 50)) if turns else None,
        voice_to_voice_p95_ms=_ms(percentile(turns, 95)) if turns else None,
        memory_load_p99_ms=_ms(percentile(loads, 99)) if loads else None,
        analyses_failed=sum(r.status == CallStatus.FAILED for r in records),
    )
