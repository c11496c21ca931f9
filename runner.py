"""Rapport's one entry point (installed as the ``rapport`` command too).

``python runner.py`` runs the bot (local WebRTC test room by default; ``-t daily`` or
``-t twilio`` for the phone line; ``--help`` lists every option). Commands manage what the bot
remembers and what it has to follow up::

    python runner.py memory list|show|export|forget --agent A [--caller NUMBER] [--yes]
    python runner.py memory reseal-numbers   # after rotating the number key
    python runner.py calls list --agent A [--action ACTION] [--since 7d] [--field F=V] [--columns F]
    python runner.py calls show CALL_ID --agent A
    python runner.py calls stats --agent A [--since 7d]
    python runner.py calls callback CALL_ID --agent A (--to STAFF_PHONE | --agent-calls)
    python runner.py calls export --agent A [--since 7d] [--format csv|jsonl] [--output FILE]
    python runner.py worker [--retry-dead] [--concurrency N] [--port P]
    python runner.py dashboard [--host H] [--port P] [--agent A]
    python runner.py demo [--data DATA] [--agent A]   # a week of calls, no keys needed

The process is :func:`cli.main.run`: ``.env`` read once (the environment wins over it), logging
set up, then the dispatch, :func:`cli.main.main`.
"""

from __future__ import annotations

import runpy
import sys
from typing import TYPE_CHECKING

from cli.main import run

if TYPE_CHECKING:
    from pipecat.runner.types import RunnerArguments


async def bot(runner_args: RunnerArguments) -> None:
    """Take one call: Pipecat's development runner looks for ``bot`` in ``__main__``."""
    from bot.process import serve_call

    await serve_call(runner_args)


def console() -> None:
    """The ``rapport`` command: this module run as ``__main__``, as ``python runner.py`` is."""
    runpy.run_module("runner", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
