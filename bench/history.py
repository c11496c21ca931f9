"""The call history's costs: writing a call, the questions people ask, export, forget.

    python -m bench.history [--calls 10000] [--url postgresql://…] [--json]

Without ``--url`` the history is a SQLite file in a temporary folder. The history is filled with
``--calls`` analysed calls of 500 callers over a year (each with a six-turn transcript); then:
one call written as the worker writes it (closed, then analysed: two transactions), the urgent
calls of last month, one caller's calls in one month, exporting everything, forgetting a caller.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

from bench.report import percentile, print_report, progress
from memory.history.store import CallHistory, history_database_url
from memory.models import CallAnalysis, CallRecord, CallStatus, Turn, now
from memory.privacy.identity import CallerIdentity

AGENT = "bench"
CALLERS = 500
YEAR_S = 365 * 86_400.0
DAY_S = 86_400.0
_SAMPLES = 200


def _caller(index: int) -> CallerIdentity:
    return CallerIdentity(agent_id=AGENT, key=f"v1.{index:064x}", masked=f"+1•••{index % 100:02d}")


def _call(call_id: str, ended: float) -> CallRecord:
    turns = [
        Turn(
            role="user" if i % 2 == 0 else "assistant",
            text=f"Turn {i} of {call_id}: a sentence of about the length people say on the phone.",
            at=ended - 60 + i,
        )
        for i in range(6)
    ]
    return CallRecord(
        call_id=call_id,
        agent_id=AGENT,
        status=CallStatus.ENDED,
        started_at=ended - 120,
        ended_at=ended,
        ended_reason="hangup",
        transcript=turns,
    )


def _analysed(record: CallRecord, rng: random.Random) -> CallRecord:
    analysis = CallAnalysis(
        summary="The caller asked about an order and will be called back.",
        urgency=rng.randint(1, 5),
        action=rng.choice(["call_back", "send_quote", "none"]),
        sentiment="neutral",
        language="en",
        fields={"appointment_type": "cleaning"},
    )
    return record.model_copy(update={"status": CallStatus.ANALYSED, "analysis": analysis})


async def _timed_ms(work: Awaitable[object]) -> float:
    started = time.perf_counter()
    await work
    return (time.perf_counter() - started) * 1000


async def run(calls: int, url: str) -> dict[str, object]:
    history = CallHistory(url, tombstone_seconds=3600)
    rng = random.Random(7)
    today = now()
    try:
        assert await history.ping()
        for index in progress(range(calls), "filling the history"):
            record = _call(f"c{index}", today - rng.uniform(0, YEAR_S))
            await history.save(_caller(index % CALLERS), _analysed(record, rng))
        writes = []
        for index in range(_SAMPLES):
            record = _call(f"w{index}", today)
            who = _caller(index % CALLERS)
            started = time.perf_counter()
            await history.save(who, record)
            await history.save(who, _analysed(record, rng))
            writes.append((time.perf_counter() - started) * 1000)
        urgent = [
            await _timed_ms(history.calls(AGENT, since=today - 30 * DAY_S, min_urgency=4))
            for _ in range(20)
        ]
        month = [
            await _timed_ms(
                history.calls(
                    AGENT,
                    since=today - 250 * DAY_S,
                    until=today - 220 * DAY_S,
                    caller_key=_caller(i).key,
                )
            )
            for i in range(20)
        ]
        started = time.perf_counter()
        exported = 0
        async for _ in history.export(AGENT, since=today - 2 * YEAR_S):
            exported += 1
        export_s = time.perf_counter() - started
        forgets = [await _timed_ms(history.forget(_caller(i))) for i in range(20)]
    finally:
        await history.aclose()
    return {
        "engine": history.backend,
        "calls": calls,
        "write_a_call_p50_ms": round(percentile(writes, 0.5), 2),
        "write_a_call_p95_ms": round(percentile(writes, 0.95), 2),
        "urgent_last_month_p50_ms": round(percentile(urgent, 0.5), 2),
        "a_callers_month_p50_ms": round(percentile(month, 0.5), 2),
        "export_calls_per_s": round(exported / export_s),
        "forget_a_caller_p50_ms": round(percentile(forgets, 0.5), 2),
    }


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--url", default=None, help="a postgresql:// URL (default: SQLite)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rapport-bench-history-") as folder:
        url = history_database_url(args.url, data_dir=Path(folder))
        assert url is not None
        result = asyncio.run(run(args.calls, url))
    print_report(
        "Call history",
        result,
        targets={},
        as_json=args.json,
    )


if __name__ == "__main__":
    main()
