"""The dispatch behind ``python runner.py`` and ``rapport``: a command, or else the bot.

The first argument names a command (``memory``, ``calls``, ``worker``, ``dashboard``,
``demo``); without one, the arguments are Pipecat's runner options and the bot serves calls.
:func:`run` is the whole process (``.env``, logging, then :func:`main`); a setting a command
refuses is one line naming it on stderr and exit code 2, whichever command it is.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from pydantic import ValidationError
from pydantic_settings import SettingsError

from cli.calls import add_calls_commands
from cli.dashboard import add_dashboard_command
from cli.demo import add_demo_command
from cli.environment import read_env_file
from cli.logs import configure_logging, log_level
from cli.memory import add_memory_commands
from cli.worker import add_worker_command
from memory.errors import ConfigurationError
from memory.settings import invalid_settings

PROG = "runner.py"


def command_parser() -> argparse.ArgumentParser:
    """The parser of every command (the bot's options are Pipecat's runner's)."""
    parser = argparse.ArgumentParser(prog=PROG, description="Rapport phone agent")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_memory_commands(subparsers)
    add_calls_commands(subparsers)
    add_worker_command(subparsers)
    add_dashboard_command(subparsers)
    add_demo_command(subparsers)
    return parser


def _commands(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each command's name and one-line help, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {}


def _print_commands(parser: argparse.ArgumentParser) -> None:
    print(f"usage: {PROG} COMMAND ... | {PROG} [runner options]\n")
    print("commands:")
    for name, text in _commands(parser).items():
        print(f"  {name:<10}{text}")
    print(f"\n'{PROG} COMMAND --help' describes one command.\n")


def main(argv: Sequence[str]) -> int:
    """Run a command, or the bot when the first argument is an option (or there is none).

    Returns:
        The exit code: 2 for an unknown command, named in one line on stderr.
    """
    argv = list(argv)
    parser = command_parser()
    commands = _commands(parser)
    if argv and argv[0] in commands:
        args = parser.parse_args(argv)
        try:
            return asyncio.run(args.handler(args))
        except (ValidationError, SettingsError) as e:
            return _refused(args.command, invalid_settings(e))
        except ConfigurationError as e:
            return _refused(args.command, e)
    if argv and not argv[0].startswith("-"):
        names = ", ".join(commands)
        print(
            f"rapport: unknown command {argv[0]!r} (commands: {names}; see {PROG} --help)",
            file=sys.stderr,
        )
        return 2
    if {"-h", "--help"} & set(argv):
        _print_commands(parser)
    from cli.serve import run_bot

    return run_bot(argv)


def _refused(command: str, error: ConfigurationError) -> int:
    """A setting a command cannot start with: one line naming it, exit code 2."""
    print(f"rapport {command}: {error}", file=sys.stderr)
    return 2


def run(argv: Sequence[str]) -> int:
    """The whole process, as ``python runner.py`` and ``rapport`` run it; the exit code.

    ``.env`` is read once, before any setting (the environment wins over it); then logging is
    set up as ``RAPPORT_LOG_LEVEL`` says, phone numbers masked, for the bot and every command.
    """
    read_env_file()
    try:
        configure_logging(log_level())
    except ConfigurationError as e:
        print(f"rapport: {e}", file=sys.stderr)
        return 2
    return main(argv)
