"""How fast one call's memory loads, and what a caller costs in Redis.

    python -m bench.memory_load --callers 100000 --facts 20 [--json]

Fills a store (the embedded Redis in a temporary folder unless ``REDIS_URL`` is set) with N
callers, each with a profile, ``--facts`` facts carrying 384-dimension compact embeddings and
ten exchanges of recent turns, then times ``MemoryStore.load`` sequentially and with 100 loads
in flight, and reads ``MEMORY USAGE`` of every key of a sample of callers.

The call-start rows time what a call start does with a caller's memory, as
``MemoryContextProcessor`` does it: load, fact selection (``call_start_facts``) and rendering
(``render_memory``), for one caller each with 20, 1,000 and 10,000 facts without stored vectors
(ranked lexically; the cap is lifted so such a caller exists).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid

import numpy as np
from redis.asyncio import Redis

from bench.redis_target import benchmark_redis
from bench.report import percentile, print_report, progress
from memory.models import CallAnalysis, CallRecord, Fact, Turn, now
from memory.privacy.identity import CallerIdentity, identify
from memory.recall.ranking import call_start_facts
from memory.recall.render import render_memory
from memory.runtime import freeze_startup_objects
from memory.store.callers import MemoryStore

PEPPER = b"benchmark-pepper-0123456789abcdef"
AGENT = "bench"
DIM = 384
FILL_CONCURRENCY = 64
#: Facts of the callers whose call start is timed.
CALL_START_FACTS = (20, 1_000, 10_000)
#: The bot's defaults: ``RAPPORT_MEMORY_TOKEN_BUDGET``, ``RAPPORT_MAX_FACTS``.
TOKEN_BUDGET = 400
MAX_FACTS = 10
PURPOSE = "Take bakery orders and answer questions about deliveries."
_WORDS = [
    "prefers",
    "mornings",
    "before",
    "nine",
    "vegetarian",
    "allergic",
    "to",
    "nuts",
    "premium",
    "plan",
    "renewal",
    "due",
    "next",
    "month",
    "has",
    "two",
    "dogs",
    "lives",
    "downtown",
    "drives",
    "a",
    "blue",
    "van",
    "orders",
    "weekly",
    "pays",
    "by",
    "invoice",
    "speaks",
    "spanish",
    "at",
    "home",
    "needs",
    "wheelchair",
    "access",
    "works",
    "night",
    "shifts",
]


def caller_for(i: int) -> CallerIdentity:
    identity = identify(f"+1415{i:07d}", agent_id=AGENT, pepper=PEPPER)
    if identity is None:  # a few generated numbers are not valid US numbers
        identity = identify(f"+3460{i:07d}", agent_id=AGENT, pepper=PEPPER)
    assert identity is not None
    return identity


def compact_embedding(rng: np.random.Generator) -> bytes:
    from memory.recall.embeddings import encode_compact

    vector = rng.standard_normal(DIM).astype(np.float32)
    return encode_compact(vector / np.linalg.norm(vector))


async def fill_one(store: MemoryStore, redis: Redis, i: int, n_facts: int, seed: int) -> None:
    rng = np.random.default_rng(seed + i)
    pick = random.Random(seed + i)
    caller = caller_for(i)
    call_id = str(uuid.UUID(int=pick.getrandbits(128)))
    at = now()
    facts = [
        Fact(
            text=f"Caller {' '.join(pick.sample(_WORDS, 6))}",
            confidence=round(pick.uniform(0.5, 1.0), 2),
            source_call_id=call_id,
            embedding=compact_embedding(rng),
        )
        for _ in range(n_facts)
    ]
    record = CallRecord(
        call_id=call_id,
        agent_id=AGENT,
        started_at=at - 120,
        ended_at=at,
        ended_reason="hangup",
        analysis=CallAnalysis(
            summary="Caller asked to move the Tuesday delivery to the morning.",
            urgency=3,
            action="call_back",
            sentiment="neutral",
            language="en",
            caller_name="Sam",
        ),
    )
    await store.record_call(caller, record, facts=facts)
    turns_key = store.key_for(caller, "turns")
    turns = [
        Turn(
            role="user" if j % 2 == 0 else "assistant",
            text=" ".join(pick.sample(_WORDS, 10)),
            at=at,
        ).model_dump_json(exclude_none=True)
        for j in range(20)
    ]
    pipe = redis.pipeline(transaction=False)
    pipe.rpush(turns_key, *turns)
    pipe.expire(turns_key, store.ttl_seconds)
    await pipe.execute()


async def fill(store: MemoryStore, redis: Redis, callers: int, n_facts: int, seed: int) -> float:
    started = time.perf_counter()
    indexes = iter(progress(range(callers), f"Filling {callers} callers", total=callers))

    async def worker() -> None:
        for i in indexes:
            await fill_one(store, redis, i, n_facts, seed)

    await asyncio.gather(*(worker() for _ in range(FILL_CONCURRENCY)))
    return time.perf_counter() - started


async def timed_call_start(store: MemoryStore, caller: CallerIdentity) -> float:
    """Milliseconds for load + selection + rendering, the call start's memory work."""
    started = time.perf_counter()
    memory = await store.load(caller)
    facts = call_start_facts(
        memory, purpose=PURPOSE, token_budget=TOKEN_BUDGET, max_facts=MAX_FACTS
    )
    block = render_memory(memory, facts, token_budget=TOKEN_BUDGET)
    elapsed = (time.perf_counter() - started) * 1000
    assert block, "a filled caller rendered no memory"
    return elapsed


async def call_start_rows(redis: Redis, prefix: str, samples: int, seed: int) -> dict[str, float]:
    """p50/p99 of the call start for one caller per size in ``CALL_START_FACTS``."""
    store = MemoryStore(redis, prefix=f"{prefix}-start", max_facts=0)
    pick = random.Random(seed)
    rows: dict[str, float] = {}
    for n_facts in CALL_START_FACTS:
        caller = caller_for(10_000_000 - n_facts)
        facts = [
            Fact(
                text=f"Caller {' '.join(pick.sample(_WORDS, 6))}",
                confidence=round(pick.uniform(0.5, 1.0), 2),
                source_call_id="bench",
            )
            for _ in range(n_facts)
        ]
        for start in range(0, n_facts, 500):
            await store.upsert_facts(caller, facts[start : start + 500])
        await store.set_name(caller, "Sam")
        runs = max(20, samples // 10 if n_facts < 10_000 else samples // 100)
        for _ in range(5):
            await timed_call_start(store, caller)
        times = [await timed_call_start(store, caller) for _ in range(runs)]
        rows[f"call_start_{n_facts}_p50_ms"] = round(statistics.median(times), 3)
        rows[f"call_start_{n_facts}_p99_ms"] = round(percentile(times, 0.99), 3)
    return rows


async def timed_load(store: MemoryStore, caller: CallerIdentity) -> float:
    started = time.perf_counter()
    memory = await store.load(caller)
    elapsed = (time.perf_counter() - started) * 1000
    assert memory.facts, "a filled caller loaded no facts"
    return elapsed


async def measure(args: argparse.Namespace, redis: Redis) -> dict[str, float]:
    store_prefix = f"bench-{os.getpid()}"
    store = MemoryStore(redis, prefix=store_prefix)
    fill_seconds = await fill(store, redis, args.callers, args.facts, args.seed)
    freeze_startup_objects()  # as the bot does once started
    pick = random.Random(args.seed)
    # Warm the interpreter and open the pool's connections before timing anything.
    warm = [caller_for(pick.randrange(args.callers)) for _ in range(100)]
    await asyncio.gather(*(timed_load(store, c) for c in warm))
    sequential = [
        await timed_load(store, caller_for(pick.randrange(args.callers)))
        for _ in range(args.samples)
    ]
    concurrent: list[float] = []
    for _ in range(max(1, args.samples // 100)):
        batch = [caller_for(pick.randrange(args.callers)) for _ in range(100)]
        concurrent += await asyncio.gather(*(timed_load(store, c) for c in batch))
    sizes = []
    for i in pick.sample(range(args.callers), min(200, args.callers)):
        caller = caller_for(i)
        keys = [
            store.key_for(caller, part)
            for part in ("profile", "facts", "emb", "turns", "calls", "callstate")
        ]
        keys += [
            store.key_for(caller, f"call:{c.decode()}") for c in await redis.zrange(keys[4], 0, -1)
        ]
        sizes.append(sum([await redis.memory_usage(key) or 0 for key in keys]))
    return {
        "callers": args.callers,
        "facts": args.facts,
        "fill_s": round(fill_seconds, 1),
        "p50_ms": round(statistics.median(sequential), 3),
        "p99_ms": round(percentile(sequential, 0.99), 3),
        "p50_concurrent_ms": round(statistics.median(concurrent), 3),
        "p99_concurrent_ms": round(percentile(concurrent, 0.99), 3),
        "bytes_per_caller": round(statistics.mean(sizes)),
        **await call_start_rows(redis, store_prefix, args.samples, args.seed),
    }


async def run(args: argparse.Namespace) -> dict[str, float]:
    async with benchmark_redis(f"bench-{os.getpid()}") as redis:
        return await measure(args, redis)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=10_000)
    parser.add_argument("--facts", type=int, default=20)
    parser.add_argument("--samples", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print_report(
        f"MemoryStore.load: {args.callers} callers x {args.facts} facts",
        result,
        targets={
            "p99_ms": "<= 2",
            "p99_concurrent_ms": "<= 20",
            "bytes_per_caller": "<= 16384",
            "call_start_1000_p99_ms": "<= 10",
            "call_start_10000_p99_ms": "<= 150",
        },
        as_json=args.json,
    )


if __name__ == "__main__":
    main()
