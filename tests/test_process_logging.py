"""Every Rapport process logs the same way: ``RAPPORT_LOG_LEVEL``, numbers masked, outages as two
lines. Run as a user runs them: ``runner.py worker``, ``dashboard``, ``memory`` and ``calls``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from memory.backend.connect import client_from_url
from memory.backend.embedded import EmbeddedRedis
from memory.privacy.identity import identify
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.text_bot import _free_port
from tests.support.polling import eventually
from tests.support.values import API_KEY, PEPPER
from tests.support.worker import analysed_reply, hang_up

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
#: A business line named by its own phone number: a digit string the redaction masks.
AGENT = "0034931234567"


def environment(folder: Path, **settings: str) -> dict[str, str]:
    """A fresh process environment: nothing of the developer's, the data in ``folder``."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(folder),
        "PYTHONPATH": str(REPO),
        "RAPPORT_DATA_DIR": str(folder / "data"),
        **settings,
    }


async def test_the_worker_masks_numbers_and_logs_an_outage_as_two_lines(
    tmp_path: Path, own_redis: EmbeddedRedis, key_prefix: str
) -> None:
    redis = client_from_url(own_redis.url, connect_timeout=0.5, command_timeout=0.5)
    store = MemoryStore(redis, prefix=key_prefix)
    queue = AnalysisQueue(redis, prefix=key_prefix)
    who = identify("+14155550123", agent_id=AGENT, pepper=PEPPER.encode())
    assert who is not None
    await hang_up(store, queue, "call-1", who=who)
    log_path = tmp_path / "worker.log"
    async with FakeAnthropic(api_key=API_KEY) as fake:
        fake.script(analysed_reply())
        env = environment(
            tmp_path,
            REDIS_URL=own_redis.url,
            RAPPORT_PEPPER=PEPPER,
            RAPPORT_KEY_PREFIX=key_prefix,
            ANTHROPIC_API_KEY=API_KEY,
            ANTHROPIC_BASE_URL=fake.base_url,
        )
        with log_path.open("w") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(REPO / "runner.py"),
                "worker",
                cwd=tmp_path,
                env=env,
                stdout=log,
                stderr=log,
            )

        def logged(text: str) -> bool:
            assert process.returncode is None, log_path.read_text()
            return text in log_path.read_text()

        try:
            await eventually(lambda: logged("Analysed a call of"), within=30)
            await asyncio.to_thread(own_redis.stop)
            await eventually(lambda: logged("Redis stopped answering"), within=30)
            await asyncio.sleep(2)  # the worker keeps trying meanwhile, several times a second
            await asyncio.to_thread(own_redis.start)
            await eventually(lambda: logged("Redis is answering again"), within=30)
        finally:
            process.send_signal(signal.SIGINT)
            await asyncio.wait_for(process.wait(), 20)
            await redis.aclose()
    output = log_path.read_text()
    assert AGENT not in output and "4155550123" not in output
    assert "Analysed a call of +1•••23 for +34•••67" in output
    assert output.count("Redis stopped answering") == 1
    assert output.count("Redis is answering again") == 1
    assert "Redis did not answer" not in output  # a DEBUG line per retry: not at INFO
    assert "Traceback" not in output


@pytest.mark.parametrize(
    "command",
    [("memory", "list", "--agent", "default"), ("calls", "list", "--agent", "default")],
    ids=["memory", "calls"],
)
def test_a_command_logs_at_the_level_set(tmp_path: Path, command: tuple[str, ...]) -> None:
    def stderr(level: str) -> str:
        result = subprocess.run(
            [sys.executable, str(REPO / "runner.py"), *command],
            cwd=tmp_path,
            env=environment(tmp_path, RAPPORT_LOG_LEVEL=level),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stderr

    assert "Started the embedded Redis server" in stderr("info")
    assert stderr("ERROR") == ""


async def test_the_dashboard_logs_at_the_level_set(tmp_path: Path) -> None:
    port = _free_port()
    log_path = tmp_path / "dashboard.log"
    with log_path.open("w") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(REPO / "runner.py"),
            "dashboard",
            "--port",
            str(port),
            cwd=tmp_path,
            env=environment(tmp_path, RAPPORT_LOG_LEVEL="ERROR"),
            stdout=log,
            stderr=log,
        )

    async def serving() -> bool:
        assert process.returncode is None, log_path.read_text()
        try:
            async with httpx.AsyncClient() as http:
                response = await http.get(f"http://127.0.0.1:{port}/dashboard")
                return response.status_code < 500
        except httpx.TransportError:
            return False

    try:
        await eventually(serving, within=30)
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.wait(), 20)
    output = log_path.read_text()
    assert "Dashboard of default at" in output  # printed, not logged
    assert "Started the embedded Redis server" not in output
    assert "Caller keys use the generated pepper file" not in output  # a WARNING
