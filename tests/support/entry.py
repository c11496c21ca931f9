"""``python runner.py ARGS`` run as a user runs it: what it printed and its exit code.

A fresh Python process costs about three seconds of imports here, so tests that refuse a
setting run most of their cases through the same entry, :func:`cli.main.run`, inside the test
process instead: with the same environment (and nothing else in it), the same working folder,
stdout and stderr collected apart, and every piece of process state ``run`` changes put back
afterwards (the environment, the working folder, ``sys.argv``, the log handlers). A few cases
of each kind stay real subprocesses (:func:`in_subprocess`), so what happens only in a fresh
process (an import that logs, ``runner.py``'s own ``sys.exit``) is still covered.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from cli.format import console
from cli.main import run

REPO = Path(__file__).resolve().parents[2]
#: Longer than any refusal takes, even on a loaded machine; a bot that serves never returns.
EXIT_WITHIN_S = 120


@dataclass(frozen=True, slots=True)
class Exited:
    """How ``runner.py`` ended: its exit code and what it wrote to stdout and stderr."""

    code: int
    stdout: str
    stderr: str


def in_subprocess(
    folder: Path, command: Sequence[str], env: Mapping[str, str], *, within: float = EXIT_WITHIN_S
) -> Exited:
    """``python runner.py COMMAND`` in a process of its own, in ``folder``, with only ``env``;
    killed (and the test failed) after ``within`` seconds."""
    result = subprocess.run(
        [sys.executable, str(REPO / "runner.py"), *command],
        cwd=folder,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=within,
    )
    return Exited(result.returncode, result.stdout, result.stderr)


@contextmanager
def _as_a_fresh_process(folder: Path, env: Mapping[str, str]) -> Iterator[None]:
    """This process as ``runner.py`` started in ``folder`` with only ``env`` would find it; put
    back afterwards, with whatever ``run`` added to the environment removed."""
    saved_env, saved_argv, started = dict(os.environ), list(sys.argv), Path.cwd()
    # The tables' console sizes itself from COLUMNS as a fresh process's would, whatever width
    # it was given before (rich keeps a width once set).
    saved_size = console._width, console._height
    os.environ.clear()
    os.environ.update(env)
    console._width = console._height = None
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(started)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv
        console._width, console._height = saved_size
        # run() logs to the stderr it was given; the test process logs as before.
        logger.remove()
        logger.add(sys.__stderr__)


def in_this_process(folder: Path, command: Sequence[str], env: Mapping[str, str]) -> Exited:
    """:func:`cli.main.run` as ``runner.py`` calls it, as if the process were started in
    ``folder`` with only ``env``; everything it changed is put back.

    An exception escaping ``run`` is what a user would see as a traceback: it is raised here.
    """
    stdout, stderr = io.StringIO(), io.StringIO()
    outcome: list[int | BaseException] = []

    def entry() -> None:
        try:
            outcome.append(run(list(command)))
        except SystemExit as e:  # argparse's own exits, as runner.py's would be
            outcome.append(e.code if isinstance(e.code, int) else 1)
        except BaseException as e:
            outcome.append(e)

    # In a thread of its own: a start-up that refuses nothing serves forever, and must fail the
    # test rather than hang it.
    with _as_a_fresh_process(folder, env), redirect_stdout(stdout), redirect_stderr(stderr):
        worker = threading.Thread(target=entry, name="runner.py", daemon=True)
        worker.start()
        worker.join(EXIT_WITHIN_S)
    assert outcome, f"runner.py {' '.join(command)} did not exit within {EXIT_WITHIN_S} s"
    (result,) = outcome
    if isinstance(result, BaseException):
        raise result
    return Exited(result, stdout.getvalue(), stderr.getvalue())
