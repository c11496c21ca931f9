"""``python runner.py memory …``: look at, export and forget what Rapport remembers.

``memory reseal-numbers`` seals every kept number again after the number key was rotated.

Numbers are shown masked, except the one the user typed on the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from rich.table import Table
from rich.text import Text

from cli.format import console, print_error, when
from memory.errors import ConfigurationError, RapportMemoryError
from memory.privacy.identity import CallerIdentity
from memory.runtime import MemoryRuntime, memory_runtime
from memory.store.callbacks import reseal_numbers
from memory.store.queue import AnalysisQueue


def add_memory_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``memory list|show|export|forget|reseal-numbers`` on a parent parser."""
    memory = subparsers.add_parser("memory", help="inspect, export or forget caller memory")
    actions = memory.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="an agent's callers, most recent first")
    listing.add_argument("--agent", required=True)
    listing.add_argument("--page", type=int, default=1)
    listing.add_argument("--per-page", type=int, default=50)
    for name, text in (
        ("show", "one caller's profile, facts and recent turns"),
        ("export", "one caller's data as JSON"),
        ("forget", "delete everything about one caller"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--agent", required=True)
        action.add_argument("--caller", required=True, help="the caller's number, any format")
        if name == "forget":
            action.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    actions.add_parser(
        "reseal-numbers",
        help="seal every kept number again with the number key's first line (after rotating it)",
    )
    memory.set_defaults(handler=run_memory_command)


async def run_memory_command(args: argparse.Namespace) -> int:
    """Run one ``memory`` sub-command; returns the process exit code."""
    try:
        async with memory_runtime() as runtime:
            if args.action == "list":
                return await _list(runtime, args)
            if args.action == "reseal-numbers":
                return await _reseal_numbers(runtime)
            caller = runtime.identify(args.caller, agent_id=args.agent)
            if caller is None:
                console.print("[red]That caller id is anonymous or not a valid number.[/red]")
                return 2
            if args.action == "show":
                return await _show(runtime, caller, args.caller)
            if args.action == "export":
                json.dump(await runtime.store.export(caller), sys.stdout, indent=2)
                sys.stdout.write("\n")
                return 0
            return await _forget(runtime, caller, args)
    except ConfigurationError:
        raise  # cli.main names the setting in one line, exit code 2
    except RapportMemoryError as e:
        print_error(str(e))
        return 1


async def _reseal_numbers(runtime: MemoryRuntime) -> int:
    if runtime.numbers is None:
        print_error("Callers' numbers are not kept (RAPPORT_CALLBACK_NUMBERS=false).")
        return 1
    count = await reseal_numbers(
        runtime.redis, numbers=runtime.numbers, prefix=runtime.settings.key_prefix
    )
    console.print(
        f"Sealed {count} kept numbers again with the first key of RAPPORT_NUMBER_KEY_FILE; "
        "the keys below it can now be removed."
    )
    return 0


async def _list(runtime: MemoryRuntime, args: argparse.Namespace) -> int:
    offset = (max(args.page, 1) - 1) * args.per_page
    rows = await runtime.store.list_callers(args.agent, offset=offset, limit=args.per_page)
    table = Table(title=f"Callers of {args.agent} (page {args.page})")
    for column in ("caller", "name", "calls", "last seen", "sentiment", "last summary"):
        table.add_column(column)
    for row in rows:
        p = row.profile
        table.add_row(
            p.masked_number or "•••",
            p.name or "-",
            str(p.call_count),
            when(p.last_seen),
            p.last_sentiment or "-",
            p.last_summary or "-",
        )
    console.print(table)
    return 0


async def _show(runtime: MemoryRuntime, caller: CallerIdentity, typed: str) -> int:
    data = await runtime.store.export(caller)
    profile = data["profile"]
    console.print(Text(f"{typed} for agent {caller.agent_id}", style="bold"))
    summary = Table(show_header=False)
    for field in (
        "name",
        "language",
        "call_count",
        "last_sentiment",
        "last_summary",
        "last_action",
        "urgency",
    ):
        summary.add_row(field, Text(str(profile.get(field) or "-")))
    summary.add_row("first seen", when(profile.get("first_seen")))
    summary.add_row("last seen", when(profile.get("last_seen")))
    console.print(summary)
    facts = Table(title="Facts")
    for column in ("fact", "confidence", "confirmed", "state"):
        facts.add_column(column)
    for fact in data["facts"]:
        state = "superseded" if fact["superseded_by"] else "active"
        facts.add_row(
            fact["text"], f"{fact['confidence']:.2f}", when(fact["last_confirmed_at"]), state
        )
    console.print(facts)
    turns = Table(title="Recent turns")
    turns.add_column("who")
    turns.add_column("said")
    for turn in data["recent_turns"]:
        turns.add_row("caller" if turn["role"] == "user" else "agent", Text(turn["text"]))
    console.print(turns)
    return 0


async def _forget(runtime: MemoryRuntime, caller: CallerIdentity, args: argparse.Namespace) -> int:
    question = f"Forget everything about {args.caller} for {caller.agent_id}? Type 'yes': "
    if not args.yes and not _confirmed(question):
        return 1
    removed = await runtime.store.forget(caller)
    queue = AnalysisQueue(
        runtime.redis,
        prefix=runtime.settings.key_prefix,
        retention_days=runtime.settings.retention_days,
    )
    jobs = await queue.forget_caller(caller)
    console.print(
        f"Forgot {args.caller}: {removed['facts']} facts, {removed['calls']} calls, "
        f"{removed['turns']} recent turns ({removed['keys']} keys), {jobs} queued or dead jobs, "
        f"{removed['history_calls']} calls of the call history. "
        "Calls still in progress cannot write it back."
    )
    rewrite_by = datetime.fromtimestamp(removed["rewrite_by"], UTC).strftime("%H:%M UTC")
    console.print(
        f"It leaves the disk with Redis's append-only file, rewritten by {rewrite_by} at the "
        "latest while an analysis worker runs (a Redis that refuses BGREWRITEAOF rewrites it "
        "on its own schedule)."
    )
    return 0


def _confirmed(question: str) -> bool:
    """Whether the person at the terminal answered yes; with nobody there to answer, no.

    A script (no terminal on stdin) or an input that ends before an answer deletes nothing and
    says how to confirm without a terminal.
    """
    answer = None
    if sys.stdin.isatty():
        try:
            answer = console.input(question)
        except EOFError:
            answer = None
    if answer is None:
        print("rapport memory: no answer, nothing deleted (use --yes)", file=sys.stderr)
        return False
    if answer.strip().lower() != "yes":
        console.print("Nothing was deleted.")
        return False
    return True
