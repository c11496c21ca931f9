"""``python runner.py worker`` and ``python runner.py calls …``: analysis worker and follow-ups.

    python runner.py worker [--concurrency N]        # analyse ended calls until Ctrl-C / SIGTERM
    python runner.py worker --retry-dead             # queue the dead letters again, then exit
    python runner.py calls list --agent A [--action call_back] [--since 7d]
    python runner.py calls show CALL_ID --agent A

Several workers may run at once, on one machine or many: they share the queue. Numbers are
always shown masked; transcripts are shown scrubbed.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from memory.cli import when
from memory.errors import RapportMemoryError
from memory.models import CallRecord, CallStatus, Fact, now
from memory.queue import AnalysisQueue
from memory.runtime import MemoryRuntime, memory_runtime
from memory.scrub import scrub_turns
from memory.settings import AnalysisSettings, MemorySettings
from memory.store import CallRef, MemoryStore

console = Console()

#: The worker blocks on the stream for a second at a time; the call path's tight Redis
#: timeouts would cut every such read short.
WORKER_COMMAND_TIMEOUT = 5.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800, "": 86_400}


def add_worker_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``worker [--retry-dead] [--concurrency N]`` on a parent parser."""
    worker = subparsers.add_parser("worker", help="analyse ended calls (standalone worker)")
    worker.add_argument(
        "--retry-dead", action="store_true", help="queue every dead letter again, then exit"
    )
    worker.add_argument(
        "--concurrency", type=int, default=None, help="calls analysed at once (default 4)"
    )
    worker.set_defaults(handler=run_worker_command)


def add_calls_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``calls list|show`` on a parent parser."""
    calls = subparsers.add_parser("calls", help="the follow-up list and analysed calls")
    actions = calls.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="calls to follow up, most urgent first")
    listing.add_argument("--agent", required=True)
    listing.add_argument("--action", dest="follow_up", help="only this action, e.g. call_back")
    listing.add_argument("--since", default="7d", help="how far back: 30m, 24h, 7d, 2w")
    listing.add_argument("--limit", type=int, default=500, help="calls looked at, newest first")
    show = actions.add_parser("show", help="one call: transcript, analysis, memories written")
    show.add_argument("call_id")
    show.add_argument("--agent", required=True)
    calls.set_defaults(handler=run_calls_command)


def _row(table: Table, *cells: str) -> None:
    # Text, not markup: call content such as "[pin]" must print as written.
    table.add_row(*(Text(cell) for cell in cells))


def parse_since(text: str) -> float:
    """Seconds in a duration like ``30m``, ``24h``, ``7d``, ``2w`` (a bare number is days).

    Raises:
        ValueError: Not such a duration.
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (try 24h, 7d or 2w)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


# -- worker ------------------------------------------------------------------------------------


async def run_worker_command(args: argparse.Namespace) -> int:
    """Run the worker until SIGINT/SIGTERM, or re-queue the dead letters; the exit code."""
    try:
        settings = AnalysisSettings()
        if args.concurrency is not None:
            settings = settings.model_copy(update={"concurrency": max(1, args.concurrency)})
        if not args.retry_dead:
            settings.require_api_key()
            settings.webhook_signing_secret()
        memory_settings = MemorySettings()
        memory_settings = memory_settings.model_copy(
            update={
                "redis_command_timeout": max(
                    memory_settings.redis_command_timeout, WORKER_COMMAND_TIMEOUT
                )
            }
        )
        async with memory_runtime(memory_settings) as runtime:
            queue = AnalysisQueue(
                runtime.redis,
                prefix=memory_settings.key_prefix,
                maxlen=settings.queue_maxlen,
            )
            if args.retry_dead:
                requeued = await queue.retry_dead()
                console.print(f"Queued {requeued} dead letters again.")
                return 0
            await _work(runtime, queue, settings)
            return 0
    except RapportMemoryError as e:
        # One plain line (no rich wrapping) naming what is wrong, e.g. the missing variable.
        print(f"rapport worker: {e}", file=sys.stderr)
        return 2


async def _work(runtime: MemoryRuntime, queue: AnalysisQueue, settings: AnalysisSettings) -> None:
    # Imported here: it pulls in the Anthropic SDK, slow to import for the other commands.
    from memory.worker import analysis_worker, single_threaded_embeddings

    single_threaded_embeddings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with analysis_worker(runtime.store, queue, settings) as worker:
        await worker.run(stop)


# -- calls -------------------------------------------------------------------------------------


async def run_calls_command(args: argparse.Namespace) -> int:
    """Run one ``calls`` sub-command; returns the process exit code."""
    try:
        async with memory_runtime() as runtime:
            if args.action == "list":
                return await _list(runtime, args)
            return await _show(runtime, args)
    except RapportMemoryError as e:
        console.print(Text(str(e), style="red"))
        return 1


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


async def _list(runtime: MemoryRuntime, args: argparse.Namespace) -> int:
    try:
        since = now() - parse_since(args.since)
    except ValueError as e:
        console.print(Text(str(e), style="red"))
        return 2
    records = await follow_ups(
        runtime.store, args.agent, since=since, action=args.follow_up, limit=args.limit
    )
    title = f"Follow-ups of {args.agent} since {when(since)}"
    table = Table(title=title + (f" (action {args.follow_up})" if args.follow_up else ""))
    for column in ("urgency", "action", "caller", "name", "ended", "sentiment", "summary", "call"):
        table.add_column(column, overflow="fold")
    for record in records:
        analysis = record.analysis
        _row(
            table,
            str(analysis.urgency) if analysis else "-",
            analysis.action if analysis else _pending(record),
            record.masked_number or "•••",
            (analysis.caller_name if analysis else None) or "-",
            when(record.ended_at),
            analysis.sentiment.value if analysis else "-",
            analysis.summary if analysis else "-",
            record.call_id,
        )
    console.print(table)
    return 0


def _pending(record: CallRecord) -> str:
    return "(analysis failed)" if record.status == CallStatus.FAILED else "(not analysed yet)"


async def _show(runtime: MemoryRuntime, args: argparse.Namespace) -> int:
    ref = await runtime.store.find_call(args.agent, args.call_id)
    record = await runtime.store.get_call(ref.caller, ref.call_id) if ref else None
    if ref is None or record is None:
        console.print(Text(f"No call {args.call_id} for agent {args.agent}.", style="red"))
        return 1
    console.print(
        Text.assemble(
            (f"Call {record.call_id}", "bold"),
            f" of {record.masked_number or '•••'} for {record.agent_id}: {record.status.value}",
        )
    )
    details = Table(show_header=False)
    _row(details, "started", when(record.started_at))
    _row(details, "ended", f"{when(record.ended_at)} ({record.ended_reason or '-'})")
    if record.error:
        _row(details, "analysis error", record.error)
    analysis = record.analysis
    if analysis is not None:
        _row(details, "summary", analysis.summary)
        _row(details, "urgency", str(analysis.urgency))
        _row(details, "action", analysis.action)
        _row(details, "sentiment", analysis.sentiment.value)
        _row(details, "language", analysis.language)
        _row(details, "caller name", analysis.caller_name or "-")
    console.print(details)
    facts = {fact.id: fact for fact in await runtime.store.all_facts(ref.caller)}
    memories = Table(title="Memories this call changed")
    for column in ("change", "fact", "confidence", "now"):
        memories.add_column(column)
    for change, ids in (
        ("written", record.facts_written),
        ("confirmed", record.facts_confirmed),
        ("superseded", record.facts_superseded),
    ):
        _memory_rows(memories, change, ids, facts)
    console.print(memories)
    transcript = Table(title="Transcript (scrubbed)")
    transcript.add_column("who")
    transcript.add_column("said", overflow="fold")
    # Scrubbed again for display: a call not analysed yet still holds its raw turns.
    for turn in scrub_turns(record.transcript):
        _row(transcript, "caller" if turn.role == "user" else "agent", turn.text)
    console.print(transcript)
    return 0


def _memory_rows(table: Table, change: str, ids: Sequence[str], facts: dict[str, Fact]) -> None:
    for fact_id in ids:
        fact = facts.get(fact_id)
        if fact is None:
            _row(table, change, "(forgotten)", "-", "-")
            continue
        state = "superseded" if fact.superseded_by else "active"
        _row(table, change, fact.text, f"{fact.confidence:.2f}", state)
