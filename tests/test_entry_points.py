"""``python runner.py`` and the ``rapport`` command, run as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

#: ``rapport`` as the installed console script runs it.
RAPPORT = [
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'rapport'; import runner; runner.console()",
]


def run(*args: str, via: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [*(via or [sys.executable, "runner.py"]), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_help_lists_the_commands_before_the_runner_options() -> None:
    result = run("--help")
    assert result.returncode == 0
    out = result.stdout
    for command in ("memory", "calls", "worker", "dashboard", "demo"):
        assert f"  {command} " in out
        assert out.index(f"  {command} ") < out.index("--port")


@pytest.mark.parametrize("via", [None, RAPPORT], ids=["runner.py", "rapport"])
def test_an_unknown_command_is_one_line_and_exit_2(via: list[str] | None) -> None:
    result = run("frobnicate", via=via)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "rapport: unknown command 'frobnicate' (commands: memory, calls, worker, dashboard, demo; "
        "see runner.py --help)"
    ]


@pytest.mark.parametrize("via", [None, RAPPORT], ids=["runner.py", "rapport"])
def test_a_command_help_is_the_command_s(via: list[str] | None) -> None:
    result = run("calls", "list", "--help", via=via)
    assert result.returncode == 0
    assert "--since" in result.stdout
