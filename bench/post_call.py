"""After the call: hang-up to loadable memories, and how many analyses one worker sustains.

    python -m bench.post_call [--calls 200] [--delay 0.2] [--backlog 300] [--json]

Runs the embedded Redis in a temporary folder (or ``REDIS_URL``), the local fake Anthropic
Messages API in a thread of its own (its work must not queue behind the worker's on one event
loop) and one ``AnalysisWorker`` built as production builds it (``analysis_worker``: the real
SDK client, the default embedder, retries and claims as configured).

- Latency: per call, the bot's path (turns appended during the call, then ``end_call`` at
  hang-up), then ``store.load`` polled every millisecond until it shows the analysis. The fake
  LLM answers after a fixed delay D; the figures are that time minus D: the queue, Redis, the
  SDK, validation, merge and the write. Embeddings are computed after the write, so they are
  not in it.
- Throughput: ``--backlog`` ended calls queued at once, the LLM answering at once (D = 0);
  analyses per second of one worker, one call at a time and with the default concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from redis.asyncio import Redis

from bench.redis_target import benchmark_redis
from bench.report import percentile, print_report
from memory.analysis.analyzer import TOOL_NAME
from memory.analysis.settings import AnalysisSettings
from memory.analysis.worker import analysis_worker, single_threaded_embeddings
from memory.calls.closing import end_call
from memory.models import CallRecord, Turn, now
from memory.privacy.identity import CallerIdentity, identify
from memory.recall.embeddings import default_embedder
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue
from tests.fakes.anthropic_server import FakeAnthropic, RecordedRequest, Reply

PEPPER = b"benchmark-pepper-0123456789abcdef"
AGENT = "bench"
WARM_UP_CALLS = 10
DEFAULT_CONCURRENCY = AnalysisSettings.model_fields["concurrency"].default
TURNS = [
    ("assistant", "Bella's Bakery, good morning, how can I help?"),
    ("user", "Hi, this is Marta Puig. I'd like to order a birthday cake for Saturday."),
    ("assistant", "Lovely. What size and flavour would you like?"),
    ("user", "Chocolate, for twelve people. I can't have nuts, I'm allergic."),
    ("assistant", "Noted: no nuts. I'll send you a quote by email today."),
    ("user", "Perfect, mornings are best if you need to call me. Thanks!"),
]
ANSWER = {
    "summary": "Marta ordered a nut-free chocolate cake for twelve for Saturday. A quote follows.",
    "urgency": 3,
    "action": "send_quote",
    "sentiment": "satisfied",
    "language": "en-GB",
    "caller_name": "Marta Puig",
    "facts": [
        {"text": "Caller is allergic to nuts", "confidence": 0.95},
        {"text": "Caller prefers to be called in the morning", "confidence": 0.8},
    ],
}


class FakeLLMThread:
    """The fake Anthropic API on its own event loop in a thread, answering after ``delay``."""

    def __init__(self) -> None:
        self.delay = 0.0
        self._loop = asyncio.new_event_loop()
        self._fake = FakeAnthropic(handler=self._answer)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _answer(self, _request: RecordedRequest) -> Reply:
        self._fake.requests.clear()  # nothing reads them here; keep memory flat
        return Reply.tool_call(TOOL_NAME, ANSWER, delay=self.delay)

    @property
    def base_url(self) -> str:
        return self._fake.base_url

    @contextmanager
    def running(self) -> Iterator[FakeLLMThread]:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._fake.start(), self._loop).result()
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self._fake.close(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()


def caller_for(i: int) -> CallerIdentity:
    identity = identify(f"+34600{i:06d}", agent_id=AGENT, pepper=PEPPER)
    assert identity is not None
    return identity


async def call_and_hang_up(
    store: MemoryStore, queue: AnalysisQueue, caller: CallerIdentity, call_id: str
) -> float:
    """The bot's side of a call; returns the perf_counter time of the hang-up."""
    started = now()
    for role, text in TURNS:
        await store.append_turn(caller, Turn(role=role, text=text, call_id=call_id))
    record = CallRecord(
        call_id=call_id, agent_id=AGENT, started_at=started, ended_at=now(), ended_reason="hangup"
    )
    hung_up = time.perf_counter()
    await end_call(store, queue, caller, record)
    return hung_up


async def until_loadable(store: MemoryStore, caller: CallerIdentity) -> float:
    """Poll ``load`` every millisecond until the analysis shows; the perf_counter time then."""
    while True:
        if (await store.load(caller)).profile.last_summary is not None:
            return time.perf_counter()
        await asyncio.sleep(0.001)


async def measure_latency(
    store: MemoryStore, queue: AnalysisQueue, settings: AnalysisSettings, calls: int, delay: float
) -> list[float]:
    """Milliseconds from hang-up to loadable memories, minus the LLM delay, per call."""
    stop = asyncio.Event()
    samples: list[float] = []
    async with analysis_worker(store, queue, settings) as worker:
        running = asyncio.create_task(worker.run(stop))
        try:
            for i in range(WARM_UP_CALLS + calls):
                caller = caller_for(i)
                hung_up = await call_and_hang_up(store, queue, caller, f"latency-{i}")
                loadable = await until_loadable(store, caller)
                if i >= WARM_UP_CALLS:
                    samples.append((loadable - hung_up - delay) * 1000)
        finally:
            stop.set()
            await running
    return samples


async def measure_throughput(
    store: MemoryStore, queue: AnalysisQueue, settings: AnalysisSettings, backlog: int, first: int
) -> float:
    """Analyses per second while one worker drains a backlog of ``backlog`` ended calls."""
    for i in range(first, first + backlog):
        await call_and_hang_up(store, queue, caller_for(i), f"backlog-{i}")
    stop = asyncio.Event()
    async with analysis_worker(store, queue, settings) as worker:
        started = time.perf_counter()
        running = asyncio.create_task(worker.run(stop))
        try:
            while True:
                counts = await queue.counts()
                if counts.waiting == 0 and counts.pending == 0:
                    break
                await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - started
        finally:
            stop.set()
            await running
    return backlog / elapsed


async def measure(args: argparse.Namespace, redis: Redis, prefix: str) -> dict[str, object]:
    store = MemoryStore(redis, prefix=prefix)
    queue = AnalysisQueue(redis, prefix=prefix)
    fake = FakeLLMThread()
    with fake.running():
        settings = AnalysisSettings(
            api_key="benchmark",
            base_url=fake.base_url,
            sweep_interval=3600,
            stop_grace=5,
        )
        fake.delay = args.delay
        latency = await measure_latency(store, queue, settings, args.calls, args.delay)
        fake.delay = 0.0
        first = WARM_UP_CALLS + args.calls
        one_at_a_time = await measure_throughput(
            store, queue, settings.model_copy(update={"concurrency": 1}), args.backlog, first
        )
        concurrent = await measure_throughput(
            store, queue, settings, args.backlog, first + args.backlog
        )
    return {
        "llm_delay_ms": round(args.delay * 1000),
        "calls": args.calls,
        "embedder": default_embedder().name,
        "hangup_to_loadable_p50_ms": round(statistics.median(latency), 1),
        "hangup_to_loadable_p95_ms": round(percentile(latency, 0.95), 1),
        "hangup_to_loadable_max_ms": round(max(latency), 1),
        "analyses_per_s_1": round(one_at_a_time, 1),
        f"analyses_per_s_{DEFAULT_CONCURRENCY}": round(concurrent, 1),
    }


async def run(args: argparse.Namespace) -> dict[str, object]:
    prefix = f"bench-{os.getpid()}"
    async with benchmark_redis(prefix) as redis:
        return await measure(args, redis, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls timed for latency")
    parser.add_argument("--delay", type=float, default=0.2, help="fake LLM delay D, seconds")
    parser.add_argument("--backlog", type=int, default=300, help="calls queued for throughput")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    single_threaded_embeddings()  # as `python runner.py worker` runs
    result = asyncio.run(run(args))
    print_report(
        f"Post-call analysis (fake LLM delay D = {args.delay * 1000:.0f} ms)",
        result,
        targets={"hangup_to_loadable_p95_ms": "<= 50 (minus D)"},
        as_json=args.json,
    )


if __name__ == "__main__":
    main()
