"""Rapport's one entry point (installed as the ``rapport`` command too).

``python runner.py`` runs the bot (local WebRTC test room by default; ``-t daily`` or
``-t twilio`` for the phone line). Commands manage what the bot remembers::

    python runner.py memory list|show|export|forget --agent A [--caller NUMBER]
    python runner.py worker [--retry-dead] [--concurrency N]
    python runner.py calls list --agent A [--action ACTION] [--since 7d] [--field F=V] [--columns F]
    python runner.py calls show CALL_ID --agent A

The dispatch is :func:`cli.main.main`.
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
