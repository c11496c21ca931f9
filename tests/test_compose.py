"""``compose.yaml``: Redis with its append-only file, Postgres for the call history, two bots,
one worker, a round-robin proxy.

No Docker engine runs here. The file is checked as data (what each service runs and how they
reach each other), and by ``docker compose config`` (or the older ``docker-compose config``)
when one is installed; the proxy's ``deploy/Caddyfile`` is checked as text.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BOTS = ("bot-1", "bot-2")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((REPO / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_redis_keeps_an_append_only_file_on_a_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    (volume,) = redis["volumes"]
    assert volume.split(":")[0] in compose["volumes"] and volume.endswith(":/data")
    assert redis["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]


def test_two_bots_and_a_worker_share_that_redis(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in (*BOTS, "worker"):
        service = services[name]
        assert service["build"] == "."
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["env_file"] == ".env"  # RAPPORT_PEPPER and the keys, the same for all
    for name in BOTS:  # the image's own command: the phone line on 0.0.0.0:7860
        assert "command" not in services[name]
        assert services[name]["environment"]["RAPPORT_RUN_WORKER"] == "false"
    assert services["worker"]["command"][:3] == ["python", "runner.py", "worker"]
    # One dashboard key file for both bots: a login on one holds on the other.
    assert (
        services["bot-1"]["volumes"] == services["bot-2"]["volumes"] == ["rapport-keys:/app/pepper"]
    )
    assert "RAPPORT_DASHBOARD_KEY_FILE=/app/pepper/" in (REPO / "Dockerfile").read_text()


def test_every_process_shares_one_postgres_call_history(compose: dict[str, Any]) -> None:
    services = compose["services"]
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:15")
    (volume,) = postgres["volumes"]
    assert volume.split(":")[0] in compose["volumes"]
    assert volume.endswith(":/var/lib/postgresql/data")
    assert "ports" not in postgres  # reached by the services only
    urls = {services[name]["environment"]["RAPPORT_HISTORY_URL"] for name in (*BOTS, "worker")}
    (url,) = urls
    assert url.startswith("postgresql://rapport:") and url.endswith("@postgres:5432/rapport")
    for name in (*BOTS, "worker"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_the_proxy_spreads_requests_over_both_bots_round_robin(compose: dict[str, Any]) -> None:
    proxy = compose["services"]["proxy"]
    assert proxy["image"].startswith("caddy:")
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    assert sorted(proxy["depends_on"]) == list(BOTS)
    caddyfile = (REPO / "deploy" / "Caddyfile").read_text()
    (upstreams,) = re.findall(r"^\s*reverse_proxy\s+(.+?)\s*\{", caddyfile, re.MULTILINE)
    assert upstreams.split() == [f"{bot}:7860" for bot in BOTS]
    assert re.search(r"^\s*lb_policy\s+round_robin\s*$", caddyfile, re.MULTILINE)
    assert caddyfile.count("{") == caddyfile.count("}")


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    shutil.copy(REPO / "compose.yaml", tmp_path / "compose.yaml")
    (tmp_path / ".env").write_text("RAPPORT_PEPPER=a-pepper-of-sixteen-or-more\n")
    checked = subprocess.run(
        [*command, "-f", "compose.yaml", "config", "-q"], cwd=tmp_path, capture_output=True
    )
    assert checked.returncode == 0, checked.stderr.decode()
