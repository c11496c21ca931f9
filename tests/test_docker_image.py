"""The Docker image: what it serves, how it is health-checked, what goes into it, how it builds.

No Docker engine runs here, so the tests read the Dockerfile and ``.dockerignore`` and run the
image's own ``CMD`` and ``HEALTHCHECK`` on this machine, with only phone settings, as ``docker
run`` would, and knock on the room's doors.
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


def healthcheck() -> list[str]:
    """The ``HEALTHCHECK``'s command (exec form)."""
    match = re.search(r"^HEALTHCHECK .*?\\\n\s+CMD (\[.*\])$", DOCKERFILE, re.MULTILINE)
    assert match, "no exec-form HEALTHCHECK"
    return json.loads(match[1])


def stages() -> list[str]:
    """The Dockerfile's build stages, each from its ``FROM`` line on."""
    return re.split(r"^(?=FROM )", DOCKERFILE, flags=re.MULTILINE)[1:]


def test_the_image_runs_under_an_init_keeps_its_data_on_a_volume_and_is_health_checked() -> None:
    assert instruction("ENTRYPOINT")[0].endswith("tini")
    assert 'VOLUME ["/app/data"]' in DOCKERFILE
    assert "/health'" in healthcheck()[-1]
    assert "ENV" in DOCKERFILE and "RAPPORT_TRANSPORT=twilio" in DOCKERFILE


def test_dependencies_build_in_a_stage_with_a_compiler_the_image_does_not_keep() -> None:
    build, image = stages()
    assert build.startswith("FROM python:3.11-slim AS build")
    assert "build-essential" in build and "pip wheel" in build
    assert "build-essential" not in image and "gcc" not in image
    assert "COPY --from=build /wheels" in image and "--no-index" in image


def ignored(path: str) -> bool:
    """Whether ``.dockerignore`` keeps ``path`` out of the build context (Docker's matching: ``*``
    stays within a folder, ``**`` spans folders, a matched folder takes its contents along)."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not [p for p in patterns if p.startswith("!")], "exceptions are not handled here"
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        regex = re.escape(pattern.strip("/")).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            return True
    return False


def test_the_build_context_leaves_out_exports_data_tests_benchmarks_and_docs() -> None:
    for path in (
        "ana-export.json",
        "data/appendonly.aof",
        "tests/test_store.py",
        "bench/locomo.py",
        "docs/followups.png",
        ".env",
        "memory/__pycache__/models.cpython-311.pyc",
    ):
        assert ignored(path), path
    for path in ("memory/prices.json", "runner.py", "pyproject.toml", "README.md", "cli/serve.py"):
        assert not ignored(path), path
    # What the image needs from the source tree is all there.
    for path in (REPO / "memory").rglob("*"):
        assert not ignored(path.relative_to(REPO).as_posix()) or "__pycache__" in path.parts


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
        "RAPPORT_PEPPER_FILE": str(tmp_path / "pepper" / "pepper"),
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
        # The image's health check passes against it (its own worker reports in).
        python, flag, check = healthcheck()
        assert (python, flag) == ("python", "-c")
        check = check.replace("127.0.0.1:7860", f"127.0.0.1:{port}")

        async def healthy() -> bool:
            probe = await asyncio.create_subprocess_exec(
                sys.executable, flag, check, stderr=asyncio.subprocess.DEVNULL
            )
            return await probe.wait() == 0

        await eventually(healthy, within=30)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 20)
        log.close()
