"""``python runner.py calls …``: the follow-up list, analysed calls and the call history.

    python runner.py calls list --agent A [--action call_back] [--since 7d]
        [--field appointment_type=cleaning] [--columns appointment_type,preferred_time]
    python runner.py calls show CALL_ID --agent A
    python runner.py calls stats --agent A [--since 7d]
    python runner.py calls callback CALL_ID --agent A (--to STAFF_PHONE | --agent-calls)
        [--reason "the burst pipe"]
    python runner.py calls export --agent A --since 1y [--format csv|jsonl] [--output FILE]

``list``, ``show`` and ``stats`` read Redis, and the call history for anything older than Redis
holds (``--since 1y``); ``export`` writes the history. Numbers are always shown masked;
transcripts are shown scrubbed. ``callback`` calls the caller back from the business's Twilio
number (see :mod:`bot.callback`): ``--to`` rings that phone and puts it through to the caller,
``--agent-calls`` has Rapport call (within business hours). Both are written to the dashboard's
audit list.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from bot.settings import BotSettings
from bot.targets import phone_number
from cli.format import add_row, console, print_error, when
from memory.analysis.fields import shown
from memory.analysis.followups import follow_ups, merged, older_calls
from memory.analysis.settings import AnalysisSettings
from memory.calls.stats import summarise
from memory.errors import ConfigurationError, HistoryUnavailableError, RapportMemoryError
from memory.history.export import ExportFormat, write_export
from memory.models import CallRecord, CallStatus, Fact, now
from memory.privacy.identity import mask_number
from memory.privacy.scrub import scrub_turns
from memory.report import CallReport, Latency
from memory.runtime import MemoryRuntime, memory_runtime
from memory.store.audit import AuditAction, AuditEntry, AuditLog
from memory.store.callbacks import AgentCallback, AgentCallbacks, CallbackStatus

#: Who the audit list names for what these commands did.
CLI_USER = "cli"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdwy]?)")
_UNIT_SECONDS = {
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86_400,
    "w": 604_800,
    "y": 365 * 86_400,
    "": 86_400,
}


def add_calls_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``calls list|show|stats`` on a parent parser."""
    calls = subparsers.add_parser("calls", help="the follow-up list and analysed calls")
    actions = calls.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="calls to follow up, most urgent first")
    listing.add_argument("--agent", required=True)
    listing.add_argument("--action", dest="follow_up", help="only this action, e.g. call_back")
    _add_since(listing)
    listing.add_argument("--limit", type=int, default=500, help="follow-ups read at most")
    listing.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="only calls whose own field NAME is VALUE (repeatable): appointment_type=cleaning",
    )
    listing.add_argument(
        "--columns",
        default="",
        metavar="NAME,NAME",
        help="own fields shown as columns, e.g. appointment_type,preferred_time",
    )
    show = actions.add_parser("show", help="one call: transcript, analysis, memories written")
    show.add_argument("call_id")
    show.add_argument("--agent", required=True)
    callback = actions.add_parser(
        "callback", help="call a follow-up's caller back from the business's Twilio number"
    )
    callback.add_argument("call_id")
    callback.add_argument("--agent", required=True)
    placed_by = callback.add_mutually_exclusive_group(required=True)
    placed_by.add_argument(
        "--to",
        metavar="STAFF_PHONE",
        type=_phone,
        help="ring this phone first, then put it through to the caller (number not shown)",
    )
    placed_by.add_argument(
        "--agent-calls",
        action="store_true",
        help="Rapport itself calls the caller back, within business hours",
    )
    callback.add_argument(
        "--reason", default="", help='what Rapport\'s call back is about ("the burst pipe")'
    )
    stats = actions.add_parser("stats", help="calls, minutes, cost and latency over a period")
    stats.add_argument("--agent", required=True)
    _add_since(stats)
    stats.add_argument("--limit", type=int, default=10_000, help="calls looked at, newest first")
    export = actions.add_parser("export", help="every call in the history, as CSV or JSON lines")
    export.add_argument("--agent", required=True)
    _add_since(export)
    export.add_argument(
        "--format", choices=[f.value for f in ExportFormat], default=ExportFormat.CSV.value
    )
    export.add_argument("--output", type=Path, help="write to this file (default: standard out)")
    calls.set_defaults(handler=run_calls_command)


def _phone(text: str) -> str:
    try:
        return phone_number(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e} (with its country code: +34...)") from e


def _add_since(parser: argparse.ArgumentParser) -> None:
    # A bad duration is refused by argparse itself: one line naming --since, exit 2.
    parser.add_argument(
        "--since", default="7d", type=_since_time, help="how far back: 30m, 24h, 7d, 2w, 1y"
    )


def _since_time(text: str) -> float:
    try:
        return now() - parse_since(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def parse_since(text: str) -> float:
    """Seconds in a duration like ``30m``, ``24h``, ``7d``, ``2w``, ``1y`` (a bare number is days).

    Raises:
        ValueError: Not such a duration.
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (try 24h, 7d or 2w)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


async def run_calls_command(args: argparse.Namespace) -> int:
    """Run one ``calls`` sub-command; returns the process exit code."""
    try:
        async with memory_runtime() as runtime:
            if args.action == "list":
                return await _list(runtime, args)
            if args.action == "stats":
                return await _stats(runtime, args)
            if args.action == "callback":
                return await _callback(runtime, args)
            if args.action == "export":
                return await _export(runtime, args)
            return await _show(runtime, args)
    except ConfigurationError:
        raise  # cli.main names the setting in one line, exit code 2
    except RapportMemoryError as e:
        print_error(str(e))
        return 1


async def _callback(runtime: MemoryRuntime, args: argparse.Namespace) -> int:
    # Imported here: Twilio's SDK is needed by this command only.
    from bot.callback import CallbackDesk, CallbackError

    settings = BotSettings()
    ref = await runtime.store.find_call(args.agent, args.call_id)
    if ref is None:
        print_error(f"No call {args.call_id} for agent {args.agent}.")
        return 1
    caller = await runtime.store.caller_of(ref)
    desk = CallbackDesk(runtime=runtime, agent_id=args.agent, settings=settings)
    try:
        if args.to:
            await desk.bridge(caller, staff_phone=args.to)
            action = AuditAction.CALLED_BACK
            done = (
                f"Twilio is ringing {mask_number(args.to)}: answer it to be put through to "
                f"{caller.masked}."
            )
        else:
            callback = await desk.request_agent_callback(
                caller, ref.call_id, by=CLI_USER, reason=args.reason
            )
            action = AuditAction.AGENT_CALLBACK_REQUESTED
            done = (
                f"Rapport calls {caller.masked} back from {when(callback.due_at)} UTC (the bot "
                'must be running for Twilio): "' + callback.opening + '"'
            )
    except CallbackError as e:
        print_error(str(e))
        return 1
    audit = AuditLog(runtime.redis, prefix=runtime.settings.key_prefix)
    entry = AuditEntry(by=CLI_USER, action=action, caller=caller.masked, call_id=ref.call_id)
    await audit.record(args.agent, entry)
    console.print(Text(done))
    return 0


def _callback_state(callback: AgentCallback) -> str:
    if callback.status == CallbackStatus.QUEUED:
        return f"queued for {when(callback.due_at)} (asked by {callback.requested_by})"
    if callback.status == CallbackStatus.FAILED:
        return f"failed after {callback.attempts} attempt(s): {callback.error}"
    return f"placed (asked by {callback.requested_by})"


async def _list(runtime: MemoryRuntime, args: argparse.Namespace) -> int:
    since: float = args.since
    try:
        wanted, columns = _field_options(args.field, args.columns)
    except ValueError as e:
        print_error(str(e))
        return 2
    recent = await follow_ups(
        runtime.store,
        args.agent,
        since=since,
        action=args.follow_up,
        fields=wanted,
        limit=args.limit,
    )
    older = await _older(
        runtime,
        args.agent,
        since=since,
        action=args.follow_up,
        fields=wanted,
        follow_ups_only=True,
        limit=args.limit,
    )
    records = merged(recent, older)[: args.limit]
    title = f"Follow-ups of {args.agent} since {when(since)}"
    table = Table(title=title + (f" (action {args.follow_up})" if args.follow_up else ""))
    for column in ("urgency", "action", "caller", "name", "ended", "sentiment", "summary"):
        table.add_column(column, overflow="fold")
    for column in (*columns, "call"):
        table.add_column(column, overflow="fold")
    for record in records:
        analysis = record.analysis
        own = analysis.fields if analysis else {}
        add_row(
            table,
            str(analysis.urgency) if analysis else "-",
            analysis.action if analysis else _pending(record),
            record.masked_number or "•••",
            (analysis.caller_name if analysis else None) or "-",
            when(record.ended_at) + (" (transferred)" if record.transfer else ""),
            analysis.sentiment.value if analysis else "-",
            analysis.summary if analysis else "-",
            *(shown(own.get(column)) for column in columns),
            record.call_id,
        )
    console.print(table)
    return 0


def _field_options(filters: Sequence[str], columns: str) -> tuple[dict[str, str], list[str]]:
    """The ``--field NAME=VALUE`` filters and the ``--columns`` names, checked.

    Names are checked against the fields file when one is configured.

    Raises:
        ValueError: A filter without ``=``, or a name the fields file does not define.
        ConfigurationError: The fields file is bad.
    """
    wanted: dict[str, str] = {}
    for item in filters:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise ValueError(f"--field needs NAME=VALUE, not {item!r}")
        wanted[name.strip()] = value
    names = [name.strip() for name in columns.split(",") if name.strip()]
    # Read only when asked for: a list without fields must not depend on the fields file.
    defined = AnalysisSettings().analysis_fields() if wanted or names else None
    if defined:
        for name in (*wanted, *names):
            if defined.get(name) is None:
                known = ", ".join(definition.name for definition in defined)
                raise ValueError(f"no field {name!r} in the fields file (fields: {known})")
    return wanted, names


async def _older(runtime: MemoryRuntime, agent_id: str, **query: Any) -> list[CallRecord]:
    """:func:`older_calls`, or none with a warning when the history does not answer."""
    try:
        return await older_calls(runtime.store, agent_id, **query)
    except HistoryUnavailableError:
        print_error("The call history did not answer: only the calls Redis holds are shown.")
        return []


def _pending(record: CallRecord) -> str:
    return "(analysis failed)" if record.status == CallStatus.FAILED else "(not analysed yet)"


async def _show(runtime: MemoryRuntime, args: argparse.Namespace) -> int:
    store = runtime.store
    ref = await store.find_call(args.agent, args.call_id)
    caller = ref.caller if ref else None
    record = await store.get_call(ref.caller, ref.call_id) if ref else None
    if record is None and store.history is not None:
        # Older than Redis holds: the history has it, transcript already redacted.
        kept = await store.history.call(args.agent, args.call_id)
        caller, record = (kept.caller, kept.record) if kept else (None, None)
    if caller is None or record is None:
        print_error(f"No call {args.call_id} for agent {args.agent}.")
        return 1
    console.print(
        Text.assemble(
            (f"Call {record.call_id}", "bold"),
            f" of {record.masked_number or '•••'} for {record.agent_id}: {record.status.value}",
        )
    )
    details = Table(show_header=False)
    add_row(details, "started", when(record.started_at))
    add_row(details, "ended", f"{when(record.ended_at)} ({record.ended_reason or '-'})")
    if record.transfer is not None:
        add_row(details, "transferred", f"to {record.transfer.target}: {record.transfer.reason}")
    if record.error:
        add_row(details, "analysis error", record.error)
    callbacks = AgentCallbacks(runtime.redis, prefix=runtime.settings.key_prefix)
    callback = await callbacks.get(caller, record.call_id)
    if callback is not None:
        add_row(details, "Rapport's call back", _callback_state(callback))
    analysis = record.analysis
    if analysis is not None:
        add_row(details, "summary", analysis.summary)
        add_row(details, "urgency", str(analysis.urgency))
        add_row(details, "action", analysis.action)
        add_row(details, "sentiment", analysis.sentiment.value)
        add_row(details, "language", analysis.language)
        add_row(details, "caller name", analysis.caller_name or "-")
        for name, value in analysis.fields.items():
            add_row(details, name, shown(value))
        for name, reason in analysis.dropped_fields.items():
            add_row(details, name, f"(dropped: {reason})")
    console.print(details)
    if record.report is not None:
        console.print(report_table(record.report))
    facts = {fact.id: fact for fact in await store.all_facts(caller)}
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
        add_row(transcript, "caller" if turn.role == "user" else "agent", turn.text)
    console.print(transcript)
    return 0


async def _stats(runtime: MemoryRuntime, args: argparse.Namespace) -> int:
    since: float = args.since
    recent = await follow_ups(runtime.store, args.agent, since=since, limit=args.limit)
    older = await _older(runtime, args.agent, since=since, limit=args.limit)
    stats = summarise(merged(recent, older)[: args.limit])
    table = Table(title=f"Calls of {args.agent} since {when(since)}", show_header=False)
    currency = f" {stats.currency}" if stats.currency else ""
    add_row(table, "calls", f"{stats.calls} ({stats.reported} with a report)")
    add_row(table, "minutes", f"{stats.minutes:.1f}")
    add_row(table, "cost", f"{stats.cost:.4f}{currency}")
    add_row(table, "cost per call", _amount(stats.cost_per_call, currency))
    add_row(table, "cost per minute", _amount(stats.cost_per_minute, currency))
    add_row(table, "voice to voice p50", _millis(stats.voice_to_voice_p50_ms))
    add_row(table, "voice to voice p95", _millis(stats.voice_to_voice_p95_ms))
    add_row(table, "memory load p99", _millis(stats.memory_load_p99_ms))
    add_row(table, "analyses failed", str(stats.analyses_failed))
    console.print(table)
    return 0


async def _export(runtime: MemoryRuntime, args: argparse.Namespace) -> int:
    history = runtime.store.history
    if history is None:
        print_error("The call history is off (RAPPORT_HISTORY_URL=none): nothing to export.")
        return 2
    calls = history.export(args.agent, since=args.since)
    chosen = ExportFormat(args.format)
    if args.output is None:
        await write_export(calls, sys.stdout, format=chosen)
        return 0
    with args.output.open("w", encoding="utf-8", newline="") as out:
        written = await write_export(calls, out, format=chosen)
    since = when(args.since)
    console.print(f"Wrote {written} calls of {args.agent} since {since} to {args.output}")
    return 0


def report_table(report: CallReport) -> Table:
    """A call's report as a two-column table (``calls show``)."""
    table = Table(title="Report", show_header=False)
    cost = report.cost
    add_row(table, "duration", f"{report.duration_s:.1f} s")
    add_row(table, "pickup to first audio", _millis(report.pickup_to_first_audio_ms))
    for label, latency in (
        ("voice to voice", report.voice_to_voice),
        ("STT TTFB", report.stt_ttfb),
        ("LLM TTFB", report.llm_ttfb),
        ("TTS TTFB", report.tts_ttfb),
    ):
        add_row(table, label, _latency(latency))
    usage = report.usage
    add_row(
        table,
        "LLM tokens",
        f"{usage.llm_input_tokens} in, {usage.llm_output_tokens} out, "
        f"{usage.llm_cache_read_tokens} cache read, {usage.llm_cache_write_tokens} cache write "
        f"({usage.llm_requests} requests, {usage.llm_model})",
    )
    add_row(table, "TTS characters", f"{usage.tts_characters} ({usage.tts_model})")
    add_row(table, "STT audio", f"{usage.stt_audio_seconds:.1f} s ({usage.stt_model})")
    if report.analysis is not None:
        analysis = report.analysis
        add_row(
            table,
            "analysis tokens",
            f"{analysis.input_tokens} in, {analysis.output_tokens} out ({analysis.model})",
        )
    if report.memory is not None:
        memory = report.memory
        met = {True: "within", False: "over", None: "-"}[memory.load_met_budget]
        add_row(
            table,
            "memory load",
            f"{_millis(memory.load_ms)} ({met} the {_millis(memory.load_budget_ms)} budget)",
        )
        add_row(table, "recall", _latency(memory.recall))
        add_row(table, "dense recall skipped", f"{memory.dense_recall_skipped} turns")
    if report.errors:
        add_row(table, "errors", ", ".join(f"{k} {n}" for k, n in sorted(report.errors.items())))
    for line in cost.lines:
        add_row(
            table,
            f"cost: {line.item}",
            f"{line.cost:.6f} {cost.currency} "
            f"({line.quantity:g} {line.unit} at {line.unit_price:g})",
        )
    if cost.unpriced:
        add_row(table, "not priced", ", ".join(cost.unpriced))
    add_row(table, "cost", f"{cost.total:.6f} {cost.currency} (prices of {cost.prices_taken_on})")
    return table


def _latency(latency: Latency) -> str:
    if not latency.count:
        return "-"
    return (
        f"p50 {_millis(latency.p50_ms)}, p95 {_millis(latency.p95_ms)}, "
        f"max {_millis(latency.max_ms)} ({latency.count})"
    )


def _millis(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _amount(value: float | None, currency: str) -> str:
    return "-" if value is None else f"{value:.4f}{currency}"


def _memory_rows(table: Table, change: str, ids: Sequence[str], facts: dict[str, Fact]) -> None:
    for fact_id in ids:
        fact = facts.get(fact_id)
        if fact is None:
            add_row(table, change, "(forgotten)", "-", "-")
            continue
        state = "superseded" if fact.superseded_by else "active"
        add_row(table, change, fact.text, f"{fact.confidence:.2f}", state)
