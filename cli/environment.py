"""One precedence for every setting, in every process: the environment wins over ``.env``.

Each process entry (``runner.py``, the ``rapport`` command) calls :func:`read_env_file` first,
before any settings object is built: the working folder's ``.env`` fills in what the
environment leaves unset, and nothing reads a ``.env`` again. The settings classes read the
environment only.

Why the second half matters: Pipecat's development runner calls ``load_dotenv(override=True)``
when it is imported, from a ``.env`` it looks for above its own install. Once the bot had built
its call settings, that import swapped a value exported in the shell for the ``.env`` one, so
the calls and the analysis used different keys. ``PYTHON_DOTENV_DISABLED`` is python-dotenv's
own switch: with it set, that later load reads nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import load_dotenv

#: python-dotenv's documented switch that turns every later ``load_dotenv()`` into a no-op.
DOTENV_DISABLED = "PYTHON_DOTENV_DISABLED"


def read_env_file(path: Path | None = None) -> None:
    """Fill in unset variables from ``.env`` (in the working folder), once per process.

    Variables already in the environment keep their values. Afterwards every ``load_dotenv()``
    in this process (and its children) does nothing, whoever calls it.

    Args:
        path: The file to read (default: ``.env`` in the working folder; missing is fine).
    """
    load_dotenv(path or Path.cwd() / ".env", override=False)
    os.environ[DOTENV_DISABLED] = "1"
