"""Rapport's one entry point.

``python runner.py`` runs the bot (local WebRTC test room by default; ``-t daily`` or
``-t twilio`` for the phone line). Sub-commands manage what the bot remembers::

    python runner.py memory list|show|export|forget --agent A [--caller NUMBER]
    python runner.py worker [--retry-dead] [--concurrency N]
    python runner.py calls list --agent A [--action ACTION] [--since 7d]
    python runner.py calls show CALL_ID --agent A
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from cli.calls import add_calls_commands
from cli.memory import add_memory_commands
from cli.worker import add_worker_command

if TYPE_CHECKING:
    from pipecat.runner.types import RunnerArguments

COMMANDS = ("memory", "worker", "calls")


async def bot(runner_args: RunnerArguments) -> None:
    """Take one call: Pipecat's development runner looks for ``bot`` in ``__main__``."""
    from bot.process import serve_call

    await serve_call(runner_args)


def main(argv: list[str]) -> int:
    """Run a sub-command, or the bot when the first argument is not one."""
    if not argv or argv[0] not in COMMANDS:
        from bot.main import run_bot

        return run_bot(argv)
    parser = argparse.ArgumentParser(prog="runner.py", description="Rapport phone agent")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_memory_commands(subparsers)
    add_worker_command(subparsers)
    add_calls_commands(subparsers)
    args = parser.parse_args(argv)
    return asyncio.run(args.handler(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
