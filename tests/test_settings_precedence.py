"""One precedence in every process: a variable exported in the shell wins over ``.env``.

Run as a user runs Rapport: a ``.env`` in the working folder that disagrees with the exported
environment on the Anthropic key and the business name. The bot serves a call through its
``/v1`` API and analyses it in its own worker; then ``runner.py worker`` analyses another call.
The Anthropic fake accepts only the exported key (anything else gets the real 401), and the
prompts must name the exported business.

Pipecat's development runner loads a ``.env`` it finds above its own install, over the
environment, when it is imported: in a clone with its ``.venv`` inside, that is the clone's
``.env``. The bot here imports Pipecat through a folder inside the test's working folder (a
link to the installed package), so the runner finds the same ``.env`` a user's would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pipecat
import pytest

from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.text_bot import bot_env, serving
from tests.support.polling import eventually
from tests.support.worker import analysed_reply, hang_up, subprocess_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EXPORTED = {"ANTHROPIC_API_KEY": "exported-key", "RAPPORT_BUSINESS_NAME": "Exported Bakery"}
DOTENV = "ANTHROPIC_API_KEY=dotenv-key\nRAPPORT_BUSINESS_NAME=Dotenv Bakery\n"
API_KEY = "platform-key-0123456789"


@pytest.fixture
async def exported_fake() -> AsyncIterator[FakeAnthropic]:
    """The Anthropic API, accepting only the exported key."""
    async with FakeAnthropic(api_key=EXPORTED["ANTHROPIC_API_KEY"]) as fake:
        yield fake


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A working folder with a disagreeing ``.env``, and Pipecat installed below it."""
    (tmp_path / ".env").write_text(DOTENV)
    site = tmp_path / "site"
    site.mkdir()
    (site / "pipecat").symlink_to(Path(pipecat.__file__).parent, target_is_directory=True)
    return tmp_path


async def test_the_call_prompt_and_the_bots_analysis_use_the_exported_values(
    folder: Path, redis_url: str, key_prefix: str, exported_fake: FakeAnthropic
) -> None:
    env = bot_env(
        redis_url,
        key_prefix,
        exported_fake.base_url,
        **EXPORTED,
        RAPPORT_RUN_WORKER="true",
        RAPPORT_API_KEY=API_KEY,
        PYTHONPATH=f"{folder / 'site'}{os.pathsep}{REPO}",
    )
    exported_fake.script(analysed_reply())
    headers = {"authorization": f"Bearer {API_KEY}"}
    async with (
        serving(env=env, folder=folder) as url,
        httpx.AsyncClient(base_url=url, headers=headers) as api,
    ):
        start = {
            "caller_number": "+14155550123",
            "platform_call_id": "c-1",
            "attestation": "TN-Validation-Passed-A",
        }
        call = (await api.post("/v1/calls", json=start)).json()
        assert "Exported Bakery" in call["system_prompt"]
        assert "Dotenv" not in call["system_prompt"]
        turns = [{"role": "user", "text": "A cake for Friday, please."}]
        assert (await api.post("/v1/calls/c-1/turns", json={"turns": turns})).status_code == 200
        assert (await api.post("/v1/calls/c-1/end", json={})).status_code == 200
        await eventually(lambda: exported_fake.pending == 0, within=30)
    (analysis,) = exported_fake.requests
    assert analysis.headers["x-api-key"] == EXPORTED["ANTHROPIC_API_KEY"]
    assert "Exported Bakery" in analysis.system_text and "Dotenv" not in analysis.system_text


async def test_the_standalone_worker_uses_the_exported_values(
    folder: Path,
    redis_url: str,
    key_prefix: str,
    store: MemoryStore,
    queue: AnalysisQueue,
    exported_fake: FakeAnthropic,
) -> None:
    exported_fake.script(analysed_reply())
    await hang_up(store, queue, "call-1")
    env = subprocess_env(
        redis_url, key_prefix, **EXPORTED, ANTHROPIC_BASE_URL=exported_fake.base_url
    )
    env["PYTHONPATH"] = str(REPO)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(REPO / "runner.py"),
        "worker",
        cwd=folder,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await eventually(lambda: exported_fake.pending == 0, within=30)
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), 20)
    (analysis,) = exported_fake.requests
    assert analysis.headers["x-api-key"] == EXPORTED["ANTHROPIC_API_KEY"]
    assert "Exported Bakery" in analysis.system_text and "Dotenv" not in analysis.system_text
