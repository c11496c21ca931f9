"""The embedded Redis server: persistence, sharing between processes, clean shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from memory.backend.connect import open_redis
from memory.backend.embedded import EmbeddedRedis
from memory.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[1]

# Runs in another process: attach to (or start) the server of argv[1], read and write a key.
SECOND_PROCESS = """
import sys
import time
from pathlib import Path
import redis
from memory.backend.embedded import EmbeddedRedis
with EmbeddedRedis(data_dir=Path(sys.argv[1])) as server:
    client = redis.Redis.from_url(server.url)
    print(server.launched_here, client.get("greeting"))
    client.set("reply", "from the second process")
    client.close()
"""

# Runs in another process and keeps using the server until its stdin closes.
LONG_RUNNING_PROCESS = """
import sys
import time
from pathlib import Path
from memory.backend.embedded import EmbeddedRedis
with EmbeddedRedis(data_dir=Path(sys.argv[1])):
    print("ready", flush=True)
    sys.stdin.read()
"""


def python(code: str, data_dir: Path, *, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, str(data_dir)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=stdin,
        stdout=subprocess.PIPE,
        text=True,
    )


def run_python(code: str, data_dir: Path) -> str:
    process = python(code, data_dir)
    stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    return stdout.strip()


def client_of(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(server.url)


def answers(socket_path: Path) -> bool:
    """Whether a Redis server answers on the socket."""
    client = redis.Redis(unix_socket_path=str(socket_path), retry=Retry(NoBackoff(), 0))
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def process_running(pid: int) -> bool:
    """Whether the process exists and is not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def test_start_write_and_read(tmp_path: Path) -> None:
    with EmbeddedRedis(data_dir=tmp_path) as server:
        assert server.launched_here
        assert server.url == f"unix://{tmp_path}/redis.sock"
        client = client_of(server)
        client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"
        assert client.config_get("port") == {"port": "0"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        client.close()
    assert (tmp_path / "appendonly.aof").exists()


@pytest.mark.slow
def test_a_second_process_shares_the_server(tmp_path: Path) -> None:
    with EmbeddedRedis(data_dir=tmp_path) as server:
        client = client_of(server)
        client.set("greeting", "hello")
        assert run_python(SECOND_PROCESS, tmp_path) == "False b'hello'"
        # The second process left the server running for us and its write is visible.
        assert client.get("reply") == b"from the second process"
        client.close()


def test_restart_keeps_the_data(tmp_path: Path) -> None:
    with EmbeddedRedis(data_dir=tmp_path) as server:
        client = client_of(server)
        client.hset("profile", mapping={"name": "Ada", "calls": 3})
        client.close()
    assert not answers(tmp_path / "redis.sock")
    with EmbeddedRedis(data_dir=tmp_path) as server:
        assert server.launched_here
        client = client_of(server)
        assert client.hgetall("profile") == {b"name": b"Ada", b"calls": b"3"}
        client.close()


@pytest.mark.slow
def test_a_process_that_started_the_server_alone_stops_it(tmp_path: Path) -> None:
    assert run_python(SECOND_PROCESS, tmp_path) == "True None"
    assert not answers(tmp_path / "redis.sock")
    with EmbeddedRedis(data_dir=tmp_path) as server:
        client = client_of(server)
        assert client.get("reply") == b"from the second process"
        client.close()


@pytest.mark.slow
def test_processes_starting_at_once_share_one_server(tmp_path: Path) -> None:
    processes = [python(SECOND_PROCESS, tmp_path) for _ in range(4)]
    for process in processes:
        process.communicate(timeout=60)
        assert process.returncode == 0
    assert not answers(tmp_path / "redis.sock")


def test_clean_shutdown_leaves_no_server(tmp_path: Path) -> None:
    server = EmbeddedRedis(data_dir=tmp_path).start()
    pid = int((tmp_path / "redis.pid").read_text())
    assert process_running(pid)
    server.stop()
    server.stop()  # idempotent
    assert not process_running(pid)
    assert not (tmp_path / "redis.sock").exists()
    assert not (tmp_path / "redis.pid").exists()


@pytest.mark.slow
def test_server_outlives_its_starter_while_another_process_uses_it(tmp_path: Path) -> None:
    starter = EmbeddedRedis(data_dir=tmp_path).start()
    pid = int((tmp_path / "redis.pid").read_text())
    worker = python(LONG_RUNNING_PROCESS, tmp_path, stdin=subprocess.PIPE)
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "ready"
        starter.stop()
        assert answers(tmp_path / "redis.sock")
        assert worker.stdin is not None
        worker.stdin.close()
        assert worker.wait(timeout=60) == 0
    finally:
        worker.kill()
    assert not process_running(pid)


def test_two_servers_in_one_process_share_one_server(tmp_path: Path) -> None:
    first = EmbeddedRedis(data_dir=tmp_path).start()
    second = EmbeddedRedis(data_dir=tmp_path).start()
    assert first.launched_here and not second.launched_here
    first.stop()
    assert answers(second.socket_path)
    second.stop()
    assert not answers(second.socket_path)


def test_start_after_a_crash(tmp_path: Path) -> None:
    server = EmbeddedRedis(data_dir=tmp_path).start()
    client = client_of(server)
    client.set("greeting", "hello")
    client.close()
    pid = int((tmp_path / "redis.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    while process_running(pid):
        time.sleep(0.01)
    # The stale socket and pidfile stay behind; a new start must not be fooled by them.
    assert (tmp_path / "redis.sock").exists()
    server.stop()
    with EmbeddedRedis(data_dir=tmp_path) as restarted:
        assert restarted.launched_here
        client = client_of(restarted)
        # A reply is sent only after the write reached the AOF file, so SIGKILL loses nothing.
        assert client.get("greeting") == b"hello"
        client.close()


def test_data_dir_with_spaces_and_quotes(tmp_path: Path) -> None:
    data_dir = tmp_path / 'my "data" dir'
    with EmbeddedRedis(data_dir=data_dir) as server:
        client = client_of(server)
        assert client.ping()
        client.close()


def test_socket_path_too_long(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="too long"):
        EmbeddedRedis(data_dir=tmp_path / ("x" * 120)).start()


async def test_open_redis_embedded(tmp_path: Path) -> None:
    client, close = await open_redis(
        redis_url=None, data_dir=tmp_path, connect_timeout=1.0, command_timeout=1.0
    )
    try:
        await client.set("greeting", "hello")
        assert await client.get("greeting") == b"hello"
    finally:
        await close()
    assert not answers(tmp_path / "redis.sock")


async def test_open_redis_with_url_starts_nothing(redis_url: str, tmp_path: Path) -> None:
    client, close = await open_redis(
        redis_url=redis_url, data_dir=tmp_path, connect_timeout=1.0, command_timeout=1.0
    )
    try:
        assert await client.ping()
    finally:
        await close()
    assert not os.listdir(tmp_path)


async def test_fixtures(redis_client: redis.asyncio.Redis, key_prefix: str) -> None:
    assert key_prefix.startswith("rapport-test-")
    await redis_client.set(f"{key_prefix}:k", "v", ex=60)
    assert await redis_client.get(f"{key_prefix}:k") == b"v"
    await redis_client.delete(f"{key_prefix}:k")
