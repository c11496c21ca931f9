"""Start-up checks: a missing or wrong setting is one line naming it, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.serve import check_settings
from memory.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[1]
SERVICE_KEYS = ("DEEPGRAM_API_KEY", "ANTHROPIC_API_KEY", "AZURE_SPEECH_KEY", "AZURE_SPEECH_REGION")
TWILIO_KEYS = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No Rapport or service variable from the developer's shell, and no ``.env`` in sight."""
    for name in list(os.environ):
        if name.startswith(("RAPPORT_", "DEEPGRAM_", "ANTHROPIC_", "AZURE_", "TWILIO_", "DAILY_")):
            monkeypatch.delenv(name)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAPPORT_DATA_DIR", str(tmp_path / "data"))


def with_service_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SERVICE_KEYS:
        monkeypatch.setenv(name, "dummy")


def test_missing_keys_are_named_in_one_line() -> None:
    with pytest.raises(ConfigurationError) as error:
        check_settings(None)
    message = str(error.value)
    assert "\n" not in message
    assert all(name in message for name in SERVICE_KEYS)
    assert "README.md#configuration" in message


def test_twilio_needs_its_credentials_unless_hang_up_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with_service_keys(monkeypatch)
    check_settings("webrtc")
    with pytest.raises(ConfigurationError) as error:
        check_settings("twilio")
    assert all(name in str(error.value) for name in TWILIO_KEYS)
    assert not any(name in str(error.value) for name in SERVICE_KEYS)
    monkeypatch.setenv("RAPPORT_TWILIO_HANG_UP", "false")
    with pytest.raises(ConfigurationError, match="TWILIO_AUTH_TOKEN") as error:
        check_settings("twilio")  # it still signs every webhook
    assert "TWILIO_ACCOUNT_SID" not in str(error.value)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "token")
    check_settings("twilio")


def test_daily_needs_its_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with_service_keys(monkeypatch)
    with pytest.raises(ConfigurationError, match="DAILY_API_KEY"):
        check_settings("daily")


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("RAPPORT_DEFAULT_LANGUAGE", "fr", "RAPPORT_DEFAULT_LANGUAGE"),
        ("RAPPORT_MAX_FACTS", "many", "RAPPORT_MAX_FACTS"),
        ("REDIS_URL", "redis://localhost:6379", "RAPPORT_PEPPER"),
        ("RAPPORT_PROMPT_FILE", "/nonexistent/prompt.md", "RAPPORT_PROMPT_FILE"),
        ("RAPPORT_AGENT_ID", "my agent}", "RAPPORT_AGENT_ID"),
        ("RAPPORT_AGENT_ID", "x" * 65, "RAPPORT_AGENT_ID"),
        ("RAPPORT_BUSINESS_NAME", " ", "RAPPORT_BUSINESS_NAME"),
        ("RAPPORT_BUSINESS_NAME", "Acme {{memory}}", "RAPPORT_BUSINESS_NAME"),
        ("RAPPORT_VOICES", '{"es": "Elvira"}', "RAPPORT_VOICES"),
        ("RAPPORT_VOICES", '{"spanish": "es-ES-ElviraNeural"}', "RAPPORT_VOICES"),
        ("RAPPORT_VOICES", "not json", "RAPPORT_VOICES"),
        ("RAPPORT_UNVERIFIED_CALLERS", "some", "RAPPORT_UNVERIFIED_CALLERS"),
        ("RAPPORT_PUBLIC_URL", "https://host/path", "RAPPORT_PUBLIC_URL"),
    ],
)
def test_a_wrong_setting_is_named_in_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    with_service_keys(monkeypatch)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as error:
        check_settings(None)
    assert named in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
def test_runner_without_keys_exits_with_the_line_and_no_traceback(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, str(REPO / "runner.py")],
        cwd=tmp_path,  # no .env here
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("rapport: Missing DEEPGRAM_API_KEY, ANTHROPIC_API_KEY")
    assert "Traceback" not in result.stderr
