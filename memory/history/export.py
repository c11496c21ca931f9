"""Writing the call history out: one CSV row or one JSON line per call (``calls export``).

Both name the caller by masked number and keyed hash only. CSV is for spreadsheets: a text cell
that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``) is written
with a leading apostrophe, so call content stays data. Ids, masked numbers, times and amounts are
Rapport's own formats and are written as they are.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TextIO

from memory.history.store import HistoryCall

#: The CSV header, in order.
CSV_COLUMNS = (
    "call_id",
    "agent_id",
    "caller",
    "caller_key",
    "status",
    "trust",
    "language",
    "started_at",
    "ended_at",
    "ended_reason",
    "duration_s",
    "transferred_to",
    "transfer_reason",
    "urgency",
    "action",
    "sentiment",
    "caller_name",
    "summary",
    "fields",
    "cost",
    "currency",
    "analysis_error",
    "transcript",
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: Columns holding text that came from a caller, an LLM or a platform.
_FREE_TEXT = frozenset(
    {
        "ended_reason",
        "transferred_to",
        "transfer_reason",
        "action",
        "caller_name",
        "summary",
        "fields",
        "analysis_error",
        "transcript",
    }
)


class ExportFormat(StrEnum):
    """How ``calls export`` writes calls."""

    CSV = "csv"
    JSONL = "jsonl"


def _iso(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat() if epoch is not None else ""


def _cell(column: str, value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if column in _FREE_TEXT and text.startswith(_FORMULA_STARTS) else text


def csv_row(found: HistoryCall) -> list[str]:
    """One call as a CSV row (``CSV_COLUMNS``); the transcript as ``caller:``/``agent:`` lines."""
    record = found.record
    analysis = record.analysis
    report = record.report
    transfer = record.transfer
    values: dict[str, Any] = {
        "call_id": record.call_id,
        "agent_id": record.agent_id,
        "caller": found.caller.masked,
        "caller_key": found.caller.key,
        "status": record.status.value,
        "trust": record.trust.value if record.trust else None,
        "language": record.language,
        "started_at": _iso(record.started_at),
        "ended_at": _iso(record.ended_at),
        "ended_reason": record.ended_reason,
        "duration_s": (
            round(record.ended_at - record.started_at, 1) if record.ended_at is not None else None
        ),
        "transferred_to": transfer.target if transfer else None,
        "transfer_reason": transfer.reason if transfer else None,
        "urgency": analysis.urgency if analysis else None,
        "action": analysis.action if analysis else None,
        "sentiment": analysis.sentiment.value if analysis else None,
        "caller_name": analysis.caller_name if analysis else None,
        "summary": analysis.summary if analysis else None,
        "fields": json.dumps(analysis.fields, ensure_ascii=False) if analysis else None,
        "cost": f"{report.cost.total:.6f}" if report else None,
        "currency": report.cost.currency if report else None,
        "analysis_error": record.error,
        "transcript": "\n".join(
            f"{'caller' if turn.role == 'user' else 'agent'}: {turn.text}"
            for turn in record.transcript
        ),
    }
    return [_cell(column, values[column]) for column in CSV_COLUMNS]


def json_line(found: HistoryCall) -> str:
    """One call as a JSON object on one line: the call record plus the caller's key."""
    body = {"caller_key": found.caller.key, **found.record.model_dump(mode="json")}
    return json.dumps(body, ensure_ascii=False)


async def write_export(
    calls: AsyncIterable[HistoryCall], out: TextIO, *, format: ExportFormat
) -> int:
    """Write ``calls`` to ``out`` in ``format`` (CSV with its header).

    Returns:
        How many calls were written.
    """
    written = 0
    writer = csv.writer(out) if format == ExportFormat.CSV else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    async for found in calls:
        if writer is not None:
            writer.writerow(csv_row(found))
        else:
            out.write(json_line(found) + "\n")
        written += 1
    return written
