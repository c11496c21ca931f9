"""The call start (load, selection, render) is released within one budget."""

from __future__ import annotations

import asyncio
import time

import pytest
from pipecat.frames.frames import LLMUpdateSettingsFrame
from pipecat.tests.utils import run_test
from redis.asyncio import Redis

from memory.models import Fact, now
from memory.recall.call_start import call_start_spec, load_call_start, rebuild_digest
from memory.recall.embeddings import HashingEmbedder
from memory.store.callers import MemoryStore
from processors.memory_context import MemoryContextProcessor
from tests.support.worker import caller
from tests.test_memory_context import TEMPLATE, VOICES, opening

BUDGET_S = 0.15


class _TimedStart(MemoryContextProcessor):
    took_s: float | None = None

    async def _start(self) -> None:
        started = time.perf_counter()
        await super()._start()
        self.took_s = time.perf_counter() - started


class _CountingEmbedder(HashingEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def embed(self, texts):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().embed(texts)


@pytest.mark.parametrize("stale_digest", [False, True], ids=["no digest", "stale digest"])
@pytest.mark.parametrize("count", [1_000, 10_000])
async def test_call_start_with_many_facts_without_vectors_is_released_within_the_budget(
    redis_client: Redis, key_prefix: str, count: int, stale_digest: bool
) -> None:
    store = MemoryStore(redis_client, prefix=key_prefix)
    who = caller()
    # Written as an old version would have (no cap, no vectors): the worst a load can meet.
    facts = {
        f"f{i:05d}": Fact(text=f"Caller mentioned topic {i} on a call", last_confirmed_at=now() - i)
        for i in range(count)
    }
    await redis_client.hset(
        store.key_for(who, "facts"), mapping={k: f.stored_json() for k, f in facts.items()}
    )
    await store.set_name(who, "Marta")
    embedder = _CountingEmbedder()
    spec = call_start_spec(purpose="orders", token_budget=400, max_facts=10, embedder=embedder)
    if stale_digest:
        # A digest the worker built, then a write it has not caught up with yet.
        await store.request_digest(who, spec)
        assert await rebuild_digest(store, who, embedder)
        await store.set_name(who, "Marta P.")
        embedder.calls = 0  # the worker embedded the purpose; the call start must not
    memory = asyncio.ensure_future(load_call_start(store, who, spec))
    proc = _TimedStart(
        memory=memory,
        prompt_template=TEMPLATE,
        opening=opening,
        voices=VOICES,
        embedder=embedder,
        params=MemoryContextProcessor.Params(load_budget_s=BUDGET_S, purpose="orders"),
    )
    down, _ = await run_test(proc, frames_to_send=[], expected_down_frames=None)
    assert proc.took_s is not None and proc.took_s < BUDGET_S + 0.03
    prompts = [f for f in down if isinstance(f, LLMUpdateSettingsFrame)]
    assert prompts and "Marta" in str(prompts[-1].delta.system_instruction)
    if stale_digest:
        assert "Marta P." in str(prompts[-1].delta.system_instruction)
    assert embedder.calls == 0
