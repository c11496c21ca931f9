"""``GET /health`` and ``GET /metrics`` (web/health.py), Redis outages in the log, ``calls stats``.

Health runs against its own embedded Redis, stopped and started again mid-test; the routes are
served by the FastAPI router the bot and the worker mount, through httpx's ASGI transport.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from loguru import logger
from prometheus_client.parser import text_string_to_metric_families

from cli.main import main as cli_main
from memory.backend.connect import client_from_url, display_url
from memory.backend.embedded import EmbeddedRedis
from memory.health import ServiceHealth, check_health
from memory.models import CallRecord
from memory.privacy.identity import identify
from memory.report import CallCost, CallReport, Latency, MemoryTimings, TurnTiming
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue
from tests.support.values import PEPPER, PEPPER_BYTES
from web.health import health_router


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """What memory.backend.outage logs during the test."""
    lines: list[str] = []

    def keep(message: Any) -> None:
        if message.record["name"] == "memory.backend.outage":
            lines.append(message.record["message"])

    sink = logger.add(keep, level="INFO")
    try:
        yield lines
    finally:
        logger.remove(sink)


def app_for(queue: AnalysisQueue, *, token: str | None = None) -> FastAPI:
    async def check() -> ServiceHealth:
        return await check_health(queue, heartbeat_max_age=30)

    app = FastAPI()
    app.include_router(health_router(check=check, metrics_token=token))
    return app


async def test_health_names_redis_while_it_is_down_and_recovers(
    own_redis: EmbeddedRedis, key_prefix: str, log_lines: list[str]
) -> None:
    redis = client_from_url(own_redis.url, connect_timeout=0.5, command_timeout=0.5)
    queue = AnalysisQueue(redis, prefix=key_prefix)
    transport = httpx.ASGITransport(app=app_for(queue))
    async with httpx.AsyncClient(transport=transport, base_url="http://bot") as http:
        # No worker has reported in yet: the worker is what fails.
        response = await http.get("/health")
        assert response.status_code == 503
        assert response.json()["failing"] == ["analysis_worker"]
        assert response.json()["redis"] == "up"

        await queue.beat()
        response = await http.get("/health")
        assert response.status_code == 200
        body = response.json()
        assert body["healthy"] and body["failing"] == []
        assert (body["queue_waiting"], body["queue_pending"], body["dead_letters"]) == (0, 0, 0)
        assert 0 <= body["worker_heartbeat_age_s"] < 5

        await asyncio.to_thread(own_redis.stop)
        log_lines.clear()
        for _ in range(5):  # polled during the outage: one warning, not one per poll
            response = await http.get("/health")
            assert response.status_code == 503
            assert response.json()["failing"] == ["redis"]
            assert response.json()["redis"] == "down"
        assert len(log_lines) == 1 and log_lines[0].startswith("Redis stopped answering")

        await asyncio.to_thread(own_redis.start)
        response = await http.get("/health")
        assert response.status_code == 200, response.json()
        assert len(log_lines) == 2 and log_lines[1].startswith("Redis is answering again")
        await http.get("/health")
        assert len(log_lines) == 2

        metrics = await http.get("/metrics")
        assert metrics.status_code == 200
        families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
        errors = {
            s.labels["kind"]: s.value
            for s in families["rapport_redis_errors"].samples
            if s.name == "rapport_redis_errors_total"
        }
        assert sum(errors.values()) >= 5
        assert families["rapport_redis_up"].samples[0].value == 1
        depth = {
            s.labels["state"]: s.value for s in families["rapport_analysis_queue_depth"].samples
        }
        assert depth == {"waiting": 0, "pending": 0}
    await redis.aclose()


async def test_metrics_take_a_bearer_token_when_one_is_set(redis_url: str, key_prefix: str) -> None:
    redis = client_from_url(redis_url, connect_timeout=0.5, command_timeout=0.5)
    transport = httpx.ASGITransport(
        app=app_for(AnalysisQueue(redis, prefix=key_prefix), token="s3")
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://bot") as http:
        assert (await http.get("/metrics")).status_code == 401
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = await http.get("/metrics", headers={"Authorization": "Bearer s3"})
        assert right.status_code == 200 and "rapport_active_calls" in right.text
    await redis.aclose()


def test_urls_are_logged_without_their_password() -> None:
    assert display_url("redis://:hunter2@cache:6379/0") == "redis://***@cache:6379/0"
    assert display_url("rediss://app:hunter2@cache:6380") == "rediss://app:***@cache:6380"
    assert display_url("redis://cache:6379/0") == "redis://cache:6379/0"


def _report(duration_s: float, cost: float, turns_ms: list[float], load_ms: float) -> CallReport:
    lines = [{"item": "llm input", "quantity": 1, "unit": "u", "unit_price": cost, "cost": cost}]
    return CallReport(
        duration_s=duration_s,
        turns=[TurnTiming(voice_to_voice_ms=ms) for ms in turns_ms],
        voice_to_voice=Latency.of(turns_ms),
        memory=MemoryTimings(load_ms=load_ms),
        cost=CallCost.model_validate(
            {"currency": "USD", "prices_taken_on": "2025-10-15", "lines": lines}
        ),
    )


def test_calls_stats_prints_the_aggregates_of_known_reports_and_show_one(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    async def seed() -> None:
        redis = client_from_url(redis_url, connect_timeout=1, command_timeout=2)
        store = MemoryStore(redis, prefix=key_prefix)
        caller = identify("+14155550123", agent_id="bakery", pepper=PEPPER_BYTES)
        assert caller is not None
        reports = [
            _report(60, 0.10, [400, 600], 10),
            _report(120, 0.20, [800], 20),
            _report(60, 0.30, [1000, 1200], 200),
        ]
        ended = time.time()
        for i, report in enumerate(reports):
            record = CallRecord(
                call_id=f"stats-{i}",
                agent_id="bakery",
                started_at=ended - report.duration_s,
                ended_at=ended,
                report=report,
            )
            assert await store.close_call(caller, record)
        await store.mark_failed(caller, "stats-2", "the LLM refused")
        await redis.aclose()

    asyncio.run(seed())
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("RAPPORT_PEPPER", PEPPER)
    monkeypatch.setenv("RAPPORT_KEY_PREFIX", key_prefix)
    monkeypatch.setenv("COLUMNS", "200")
    assert cli_main(["calls", "stats", "--agent", "bakery", "--since", "1d"]) == 0
    out = capsys.readouterr().out
    rows = {
        cells[0]: cells[1]
        for line in out.splitlines()
        if len(cells := [c.strip() for c in line.strip("│┃ ").split("│")]) == 2
    }
    assert rows["calls"] == "3 (3 with a report)"
    assert rows["minutes"] == "4.0"
    assert rows["cost"] == "0.6000 USD"
    assert rows["cost per call"] == "0.2000 USD"
    assert rows["cost per minute"] == "0.1500 USD"
    # Five turns pooled: 400 600 800 1000 1200 -> p50 800, p95 1200; loads 10 20 200 -> p99 200.
    assert rows["voice to voice p50"] == "800 ms"
    assert rows["voice to voice p95"] == "1200 ms"
    assert rows["memory load p99"] == "200 ms"
    assert rows["analyses failed"] == "1"

    assert cli_main(["calls", "show", "stats-1", "--agent", "bakery"]) == 0
    shown = capsys.readouterr().out
    cells = " ".join(re.sub(r"[│┃┏┓┗┛┡┩└┘┌┐├┤┬┴┼━─╇╋]", " ", shown).split())
    assert "Report" in cells
    assert "p50 800 ms, p95 800 ms, max 800 ms (1)" in cells
    assert "0.200000 USD (prices of 2025-10-15)" in cells


@pytest.mark.slow
async def test_the_bots_server_answers_health_and_metrics(
    tmp_path: Path, redis_url: str, key_prefix: str, fake: Any
) -> None:
    from tests.fakes.text_bot import serving
    from tests.support.polling import eventually

    env = {
        "REDIS_URL": redis_url,
        "RAPPORT_PEPPER": PEPPER,
        "RAPPORT_KEY_PREFIX": key_prefix,
        "RAPPORT_RUN_WORKER": "true",
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": fake.base_url,
        "DEEPGRAM_API_KEY": "unused",
        "AZURE_SPEECH_KEY": "unused",
        "AZURE_SPEECH_REGION": "unused",
    }
    async with (
        serving("-t", "webrtc", env=env, folder=tmp_path) as url,
        httpx.AsyncClient() as http,
    ):

        async def healthy() -> bool:  # once the in-process worker has reported in
            return (await http.get(f"{url}/health")).status_code == 200

        await eventually(healthy, within=20)
        metrics = await http.get(f"{url}/metrics")
        assert metrics.status_code == 200
        names = {f.name for f in text_string_to_metric_families(metrics.text)}
        assert {"rapport_calls", "rapport_active_calls", "rapport_analysis_queue_depth"} <= names
    log = (tmp_path / "bot.log").read_text()
    assert f"Memory is on: Redis at {display_url(redis_url)}" in log


@pytest.mark.slow
async def test_the_standalone_worker_serves_health_and_metrics_on_its_port(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    import os
    import signal
    import sys

    from tests.fakes.text_bot import REPO, _free_port
    from tests.support.polling import eventually

    port = _free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO),
        "REDIS_URL": redis_url,
        "RAPPORT_PEPPER": PEPPER,
        "RAPPORT_KEY_PREFIX": key_prefix,
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(REPO / "runner.py"),
            "worker",
            "--port",
            str(port),
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=log,
        )
    try:
        async with httpx.AsyncClient() as http:

            async def healthy() -> bool:
                assert process.returncode is None, log_path.read_text()
                try:
                    return (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(healthy, within=30)
            metrics = await http.get(f"http://127.0.0.1:{port}/metrics")
            names = {f.name for f in text_string_to_metric_families(metrics.text)}
            assert {"rapport_analysis_dead_letters", "rapport_redis_up"} <= names
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0, log_path.read_text()
    assert "Traceback" not in log_path.read_text()
