"""What the Vapi endpoint adds to a turn: time to first streamed chunk, minus the LLM's own.

    python -m bench.vapi_overhead [--turns 300] [--calls 50] [--json]

A local Anthropic fake answers every request with a streamed text reply. The endpoint runs
under uvicorn on loopback with a real Redis (embedded unless ``REDIS_URL`` is set) holding a
returning caller (profile, facts, recent turns). Each sample times, back to back:

- **direct**: the SDK's ``messages.stream`` to the fake, to its first text delta;
- **endpoint**: an HTTP POST of a Vapi-shaped streaming request to ``/vapi/chat/completions``,
  to the first ``data:`` chunk carrying text.

``added`` is endpoint minus direct at p50 and p95, for turns of a call whose memory is cached
(every turn but the first) and for first turns (caller identified, memory loaded, facts chosen
and rendered).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import time
import uuid
from typing import Any

import httpx
import uvloop
from anthropic import AsyncAnthropic
from loguru import logger

from bench.redis_target import benchmark_redis
from bench.report import percentile, print_report
from bot.settings import BotSettings
from bot.wording import CALL_CONNECTED, prompt_template
from memory.models import CallTrust, Fact, Turn
from memory.runtime import MemoryAccess, MemoryRuntime, freeze_startup_objects
from memory.settings import MemorySettings
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue
from tests.fakes.anthropic_server import FakeAnthropic, Reply
from tests.support.platform_server import VAPI_SECRET, platform_app, serving
from web.platform_calls import PlatformCalls
from web.vapi import anthropic_tools

PEPPER = b"benchmark-pepper-0123456789abcdef"
AGENT = "bench"
NUMBER = "+14155550123"
REPLY = "Yes, we have sourdough and rye today. Shall I put one aside for you?"
TARGET_ADDED_P95_MS = 5.0


async def _fill(store: MemoryStore, runtime: MemoryRuntime) -> None:
    caller = runtime.identify(NUMBER, agent_id=AGENT)
    assert caller is not None
    await store.set_name(caller, "Ana Puig")
    facts = [
        Fact(text=f"Caller prefers {thing}", confidence=0.9, source_call_id="seed")
        for thing in ("sourdough", "weekday mornings", "oat milk", "paper bags", "rye bread")
    ]
    await store.upsert_facts(caller, facts)
    turns = [
        Turn(role="user" if i % 2 == 0 else "assistant", text=f"Earlier turn {i}", call_id="seed")
        for i in range(10)
    ]
    await store.append_turns(caller, turns)


def _vapi_body(call_id: str) -> dict[str, Any]:
    return {
        "model": "rapport",
        "stream": True,
        "messages": [
            {"role": "system", "content": "You answer the phone for a bakery."},
            {"role": "assistant", "content": "Hello, how can I help?"},
            {"role": "user", "content": "Do you have sourdough today?"},
        ],
        "call": {"id": call_id, "customer": {"number": NUMBER}},
    }


async def _endpoint_ttfc(http: httpx.AsyncClient, call_id: str) -> float:
    started = time.perf_counter()
    first = 0.0
    async with http.stream("POST", "/vapi/chat/completions", json=_vapi_body(call_id)) as reply:
        async for line in reply.aiter_lines():
            if not first and line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    first = time.perf_counter() - started
    return first


async def _direct_ttft(client: AsyncAnthropic, system: str) -> float:
    started = time.perf_counter()
    first = 0.0
    async with client.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=1024,
        system=system,
        messages=[
            {"role": "user", "content": CALL_CONNECTED},
            {"role": "assistant", "content": "Hello, how can I help?"},
            {"role": "user", "content": "Do you have sourdough today?"},
        ],
        tools=anthropic_tools(None),  # type: ignore[arg-type]
    ) as stream:
        async for event in stream:
            if not first and event.type == "text" and event.text:
                first = time.perf_counter() - started
    return first


def _ms(samples: list[float], q: float) -> float:
    return round(percentile(samples, q) * 1000, 2)


def _quiet() -> None:
    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def _fake_process(ready: Any, stop: Any) -> None:
    """Child process: the Anthropic fake, streaming the same reply to every request."""
    _quiet()

    async def serve() -> None:
        async with FakeAnthropic(handler=lambda _request: Reply.text(REPLY)) as fake:
            ready.put(fake.base_url)
            await asyncio.to_thread(stop.wait)

    uvloop.run(serve())


def _endpoint_process(fake_url: str, ready: Any, stop: Any) -> None:
    """Child process: Redis with a returning caller, and the Vapi endpoint under uvicorn."""
    _quiet()

    async def serve() -> None:
        prefix = f"rapport-bench-{uuid.uuid4().hex[:8]}"
        async with benchmark_redis(prefix) as redis:
            store = MemoryStore(redis, prefix=prefix)

            async def close() -> None:
                return None

            runtime = MemoryRuntime(
                settings=MemorySettings(),
                redis=redis,
                store=store,
                pepper=PEPPER,
                _close=close,
            )
            await _fill(store, runtime)
            memory = MemoryAccess(runtime=runtime, queue=AnalysisQueue(redis, prefix=prefix))
            settings = _settings(fake_url)
            async with AsyncAnthropic(api_key="bench-key", base_url=fake_url) as client:
                app = platform_app(settings, memory=memory, client=client)
                calls = PlatformCalls(
                    settings=settings,
                    prompt_template=prompt_template(settings),
                    memory=lambda: memory,
                    anthropic=lambda: client,
                )
                # The direct requests get a system prompt of the size the endpoint sends.
                probe = await calls.open(
                    NUMBER, call_id="probe", trust=CallTrust.VERIFIED, door="b"
                )
                async with serving(app) as url:
                    freeze_startup_objects()
                    ready.put((url, probe.system_prompt(calls.template)))
                    await asyncio.to_thread(stop.wait)

    uvloop.run(serve())


def _settings(fake_url: str) -> BotSettings:
    return BotSettings(
        ANTHROPIC_API_KEY="bench-key",
        ANTHROPIC_BASE_URL=fake_url,
        RAPPORT_AGENT_ID=AGENT,
        RAPPORT_VAPI_SECRET=VAPI_SECRET,
        RAPPORT_UNVERIFIED_CALLERS="full",
    )


async def _measure(fake_url: str, url: str, system: str, turns: int, calls: int) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {VAPI_SECRET}"}
    async with (
        AsyncAnthropic(api_key="bench-key", base_url=fake_url) as client,
        httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http,
    ):
        cached_call = "bench-cached"
        for _ in range(20):  # warm-up: connections, imports, the call's memory
            await _endpoint_ttfc(http, cached_call)
            await _direct_ttft(client, system)
        direct, endpoint = [], []
        for _ in range(turns):
            direct.append(await _direct_ttft(client, system))
            endpoint.append(await _endpoint_ttfc(http, cached_call))
        first_direct, first_endpoint = [], []
        for _ in range(calls):
            first_direct.append(await _direct_ttft(client, system))
            first_endpoint.append(await _endpoint_ttfc(http, uuid.uuid4().hex))
    return {
        "turns": turns,
        "direct_ttft_p50_ms": _ms(direct, 0.5),
        "direct_ttft_p95_ms": _ms(direct, 0.95),
        "endpoint_ttfc_p50_ms": _ms(endpoint, 0.5),
        "endpoint_ttfc_p95_ms": _ms(endpoint, 0.95),
        "added_p50_ms": round(_ms(endpoint, 0.5) - _ms(direct, 0.5), 2),
        "added_p95_ms": round(_ms(endpoint, 0.95) - _ms(direct, 0.95), 2),
        "first_turns": calls,
        "first_turn_added_p50_ms": round(_ms(first_endpoint, 0.5) - _ms(first_direct, 0.5), 2),
        "first_turn_added_p95_ms": round(_ms(first_endpoint, 0.95) - _ms(first_direct, 0.95), 2),
    }


def run(turns: int, calls: int) -> dict[str, Any]:
    """Time ``turns`` cached turns and ``calls`` first turns; the report's numbers.

    The fake and the endpoint each run in their own process, as they would in production
    (the LLM is remote; the endpoint's server has its own event loop, uvloop as uvicorn picks
    it in production), and this one is Vapi.
    """
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    ready = context.Queue()
    fake = context.Process(target=_fake_process, args=(ready, stop), daemon=True)
    fake.start()
    children = [fake]
    try:
        fake_url = ready.get(timeout=120)
        endpoint = context.Process(
            target=_endpoint_process, args=(fake_url, ready, stop), daemon=True
        )
        endpoint.start()
        children.append(endpoint)
        url, system = ready.get(timeout=120)
        return uvloop.run(_measure(fake_url, url, system, turns, calls))
    finally:
        stop.set()
        for child in children:
            child.join(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.turns, args.calls)
    print_report(
        "Vapi endpoint: time to first streamed chunk added",
        result,
        targets={"added_p95_ms": f"≤ {TARGET_ADDED_P95_MS}"},
        as_json=args.json,
    )


if __name__ == "__main__":
    main()
