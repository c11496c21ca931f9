"""The Docker image's command serves the phone line only: no test room beyond loopback.

No Docker engine runs here, so the test runs the image's own ``CMD`` (read from the Dockerfile)
on this machine, with only phone settings, as ``docker run`` would, and knocks on the room's
doors. It also checks what the image promises around it: an init, a data volume, a health check.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support.polling import eventually

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def instruction(name: str) -> list[str]:
    """The JSON (exec) form of a Dockerfile instruction, e.g. ``CMD``."""
    match = re.search(rf"^{name} (\[.*\])$", DOCKERFILE, re.MULTILINE)
    assert match, f"no exec-form {name}"
    return json.loads(match[1])


def test_the_image_runs_under_an_init_keeps_its_data_on_a_volume_and_is_health_checked() -> None:
    assert instruction("ENTRYPOINT")[0].endswith("tini")
    assert 'VOLUME ["/app/data"]' in DOCKERFILE
    assert "HEALTHCHECK" in DOCKERFILE and "/status" in DOCKERFILE
    assert "ENV" in DOCKERFILE and "RAPPORT_TRANSPORT=twilio" in DOCKERFILE


async def test_the_images_command_with_phone_settings_serves_no_test_room(tmp_path: Path) -> None:
    shell, flag, command = instruction("CMD")
    assert (shell, flag) == ("sh", "-c")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = command.replace("python runner.py", f"{sys.executable} {REPO / 'runner.py'}")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "RAPPORT_TRANSPORT": "twilio",
        "RAPPORT_DATA_DIR": str(tmp_path / "data"),
        "RAPPORT_RUN_WORKER": "false",
        # The image listens on 0.0.0.0: the dashboard it serves needs a password.
        "RAPPORT_DASHBOARD_PASSWORD": "a-long-dashboard-password",
        "DEEPGRAM_API_KEY": "k",
        "ANTHROPIC_API_KEY": "k",
        "AZURE_SPEECH_KEY": "k",
        "AZURE_SPEECH_REGION": "westeurope",
        "TWILIO_ACCOUNT_SID": "AC0123456789abcdef0123456789abcdef",
        "TWILIO_AUTH_TOKEN": "token",
    }
    log = (tmp_path / "bot.log").open("w")
    process = await asyncio.create_subprocess_exec(
        shell, flag, f"{command} --port {port}", env=env, cwd=tmp_path, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"

    async def up() -> bool:
        assert process.returncode is None, (tmp_path / "bot.log").read_text()
        try:
            async with aiohttp.ClientSession() as http, http.get(f"{url}/status") as response:
                return response.status == 200
        except aiohttp.ClientConnectionError:
            return False

    try:
        await eventually(up, within=60)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/", allow_redirects=False) as page:
                assert page.status == 404
            async with http.get(f"{url}/client/") as client:
                assert client.status == 404
            async with http.post(f"{url}/api/offer", json={"sdp": "", "type": "offer"}) as offer:
                assert offer.status == 404
            start = {"transport": "webrtc", "body": {"caller": "+14155550123"}}
            async with http.post(f"{url}/start", json=start) as started:
                assert started.status == 400
            async with http.post(f"{url}/", data={"From": "+14155550123"}) as webhook:
                assert webhook.status == 403  # the phone line itself is there, and checks
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 20)
        log.close()
