"""A setting Rapport cannot start with is one line naming it, exit code 2, never a traceback.

Each case is run as a user meets it: ``runner.py`` (the bot, or a command) in a fresh folder,
with nothing in its environment but the setting under test and what the bot needs besides. The
cases of one setting, every command, run as real subprocesses; the others run the same entry in
the test process (``tests/support/entry.py``), which takes milliseconds instead of seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.entry import in_subprocess, in_this_process
from tests.support.values import PEPPER

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SERVICE_KEYS = {
    "DEEPGRAM_API_KEY": "k",
    "ANTHROPIC_API_KEY": "k",
    "AZURE_SPEECH_KEY": "k",
    "AZURE_SPEECH_REGION": "westeurope",
}
BOT: tuple[str, ...] = ()
WORKER = ("worker",)
DASHBOARD = ("dashboard", "--port", "1")  # never reached: the settings are refused first
MEMORY = ("memory", "list", "--agent", "default")
CALLS = ("calls", "list", "--agent", "default")
EVERY_COMMAND = {"bot": BOT, "worker": WORKER, "dashboard": DASHBOARD, "memory": MEMORY}


def refused(
    folder: Path, command: tuple[str, ...], *, subprocess: bool = False, **settings: str
) -> str:
    """Run ``runner.py COMMAND`` in ``folder`` (in a process of its own with ``subprocess``);
    assert the one-line refusal, and return it."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(folder),
        "PYTHONPATH": str(REPO),
        **SERVICE_KEYS,
        **settings,
    }
    result = (in_subprocess if subprocess else in_this_process)(folder, command, env)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.code == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("rapport"), line
    return line


@pytest.mark.parametrize("command", [*EVERY_COMMAND.values(), CALLS], ids=[*EVERY_COMMAND, "calls"])
def test_a_redis_url_without_a_scheme(tmp_path: Path, command: tuple[str, ...]) -> None:
    line = refused(
        tmp_path, command, subprocess=True, REDIS_URL="localhost:6379", RAPPORT_PEPPER=PEPPER
    )
    assert "REDIS_URL" in line and "redis://" in line


@pytest.mark.parametrize(
    "pepper",
    ["short-pepper", f" {PEPPER}", f"{PEPPER}\r", f"{PEPPER[:8]}\t{PEPPER[8:]}"],
    ids=["short", "leading space", "line end", "tab"],
)
@pytest.mark.parametrize("command", [BOT, MEMORY], ids=["bot", "memory"])
def test_a_short_or_malformed_pepper(tmp_path: Path, command: tuple[str, ...], pepper: str) -> None:
    line = refused(tmp_path, command, RAPPORT_PEPPER=pepper)
    assert "RAPPORT_PEPPER" in line


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder that exists and cannot be written into (as root: one the kernel refuses)."""
    if os.geteuid() == 0:
        return Path("/sys/kernel")
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o500)
    return folder


@pytest.mark.parametrize("command", EVERY_COMMAND.values(), ids=EVERY_COMMAND)
@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("a-file/data", "is under a file"),
        ("a-file", "is a file"),
        ("/sys/rapport-data", "cannot be created or written"),
        ("unwritable", "cannot be created or written"),
    ],
    ids=["under a file", "a file", "cannot be created", "cannot be written"],
)
def test_a_data_folder_rapport_cannot_use(
    tmp_path: Path, command: tuple[str, ...], where: str, reason: str
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    folder = unwritable_folder(tmp_path) if where == "unwritable" else tmp_path / where
    line = refused(tmp_path, command, RAPPORT_DATA_DIR=str(folder))
    assert "RAPPORT_DATA_DIR" in line and str(folder) in line and reason in line


def test_a_transport_rapport_does_not_serve(tmp_path: Path) -> None:
    line = refused(tmp_path, ("-t", "livekit"))
    assert line.endswith(
        "-t livekit: Rapport does not serve that transport; it serves webrtc, daily, twilio"
    )


@pytest.mark.parametrize(
    "command", [("--host", "0.0.0.0"), ("dashboard", "--host", "0.0.0.0", "--port", "1")]
)
def test_a_short_dashboard_password_beyond_loopback(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    line = refused(tmp_path, command, RAPPORT_DASHBOARD_PASSWORD="eleven-char")
    assert "RAPPORT_DASHBOARD_PASSWORD" in line and "12 characters" in line


@pytest.mark.parametrize("command", EVERY_COMMAND.values(), ids=EVERY_COMMAND)
def test_a_log_level_that_is_not_one(tmp_path: Path, command: tuple[str, ...]) -> None:
    line = refused(tmp_path, command, RAPPORT_LOG_LEVEL="LOUD")
    assert "RAPPORT_LOG_LEVEL" in line


@pytest.mark.parametrize("command", EVERY_COMMAND.values(), ids=EVERY_COMMAND)
def test_a_setting_of_the_wrong_type(tmp_path: Path, command: tuple[str, ...]) -> None:
    line = refused(tmp_path, command, RAPPORT_MEMORY_RETENTION_DAYS="ninety")
    assert "RAPPORT_MEMORY_RETENTION_DAYS" in line
