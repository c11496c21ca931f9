"""``python runner.py`` with text in place of audio, for tests that start the real server.

Everything is the bot's own serving path (settings check, Pipecat's development runner, our
TwiML route, ``bot()`` from ``runner.py``, the pipeline, memory, the Anthropic service at
``ANTHROPIC_BASE_URL``); only the STT and TTS are ``bot.text_line``'s, injected through
``run_bot(services=...)``. Tests start it with :func:`serving`, configured by environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from anthropic import AsyncAnthropic

from bot.services import CallServices, build_llm
from bot.settings import BotSettings
from bot.text_line import SilentTTS, TextSTT
from cli.environment import read_env_file
from cli.serve import run_bot
from runner import bot  # noqa: F401 - the development runner calls ``__main__.bot``
from tests.support.polling import eventually
from tests.support.values import PEPPER

REPO = Path(__file__).resolve().parents[2]
#: Names the file the text bot appends each spoken sentence to.
SPOKEN_LOG = "TEXT_BOT_SPOKEN_LOG"
#: What a caller says by pressing a key, as JSON (``{"1": "That's all, goodbye!"}``).
KEYPAD = "TEXT_BOT_KEYPAD"


def text_services(
    settings: BotSettings, *, client: AsyncAnthropic, system_instruction: str
) -> CallServices:
    """The real LLM service between a pass-through STT and a silent TTS.

    With ``TEXT_BOT_SPOKEN_LOG`` set, every sentence the bot speaks is appended to that file, so
    a test can tell what a caller heard; ``TEXT_BOT_KEYPAD`` (JSON, digit → words) says what a
    caller on a phone line "says" by pressing a key.
    """
    llm = build_llm(settings, client=client, system_instruction=system_instruction)
    spoken_log = os.environ.get(SPOKEN_LOG)
    tts = SilentTTS(spoken_log=Path(spoken_log) if spoken_log else None)
    keypad = json.loads(os.environ.get(KEYPAD, "{}"))
    return CallServices(stt=TextSTT(keypad=keypad), llm=llm, tts=tts)


def bot_env(redis_url: str, key_prefix: str, anthropic_url: str, **extra: str) -> dict[str, str]:
    """The text bot's environment: the test's Redis and key prefix, the Anthropic fake, and the
    cloud keys the settings check wants (unused: STT and TTS are text here)."""
    return {
        "REDIS_URL": redis_url,
        "RAPPORT_PEPPER": PEPPER,
        "RAPPORT_KEY_PREFIX": key_prefix,
        "RAPPORT_RUN_WORKER": "false",
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": anthropic_url,
        "DEEPGRAM_API_KEY": "unused",
        "AZURE_SPEECH_KEY": "unused",
        "AZURE_SPEECH_REGION": "unused",
        **extra,
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _serving(url: str, process: asyncio.subprocess.Process) -> bool:
    assert process.returncode is None, "the bot exited"
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/status") as response:
            return response.status == 200
    except aiohttp.ClientConnectionError:
        return False


@dataclass(frozen=True, slots=True)
class RunningBot:
    """A text bot serving in a subprocess: its base URL and its process (a test may kill it)."""

    url: str
    process: asyncio.subprocess.Process


@asynccontextmanager
async def running_bot(
    *options: str,
    env: Mapping[str, str],
    folder: Path,
    secrets: Collection[str] = (),
    host: str = "127.0.0.1",
    program: Path = Path(__file__),
) -> AsyncIterator[RunningBot]:
    """Run the text bot on a loopback port until the block ends (then SIGINT, as Ctrl-C does).

    Args:
        options: Runner options (``-t twilio``...); host and port are added.
        env: The bot's whole environment (``PATH``, ``HOME`` and ``PYTHONPATH`` are added).
        folder: Working directory (its ``.env``, if any, is read as ``runner.py`` reads it)
            and where ``bot.log`` is written.
        secrets: Text that must not appear in the log (phone numbers); read when the bot
            stops, so a bot shared by several tests can be given each test's numbers.
        host: Where the server listens (it is always reached on 127.0.0.1).
        program: The script serving the bot (another one gives the bot other services, as
            ``bench/concurrent_calls.py`` does).

    Yields:
        The running bot. A bot the block killed is not checked for a clean log.
    """
    port = _free_port()
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(folder),
        "PYTHONPATH": str(REPO),
        # Beyond loopback the dashboard needs one; harmless on loopback.
        "RAPPORT_DASHBOARD_PASSWORD": "a-long-dashboard-password",
        **env,
    }
    command = [sys.executable, str(program), *options, "--host", host, "--port", str(port)]
    log_path = folder / "bot.log"
    with log_path.open("w") as log:
        process = await asyncio.create_subprocess_exec(
            *command, env=environment, cwd=folder, stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        await eventually(lambda: _serving(url, process), within=30)
        yield RunningBot(url=url, process=process)
    finally:
        killed = process.returncode is not None
        if not killed:
            process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
        output = log_path.read_text()
        assert killed or "Traceback" not in output, output
        assert not [secret for secret in secrets if secret in output], "a raw number was logged"


@asynccontextmanager
async def serving(
    *options: str,
    env: Mapping[str, str],
    folder: Path,
    secrets: Collection[str] = (),
    host: str = "127.0.0.1",
) -> AsyncIterator[str]:
    """:func:`running_bot` of the text bot, yielding only its base URL."""
    async with running_bot(*options, env=env, folder=folder, secrets=secrets, host=host) as running:
        yield running.url


if __name__ == "__main__":
    read_env_file()  # as runner.py does
    sys.exit(run_bot(sys.argv[1:], services=text_services))
