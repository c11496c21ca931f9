"""How fast one call's memory loads, and what a caller costs in Redis.

    python -m bench.memory_load --callers 100000 --facts 20 [--json]

Fills a store (the embedded Redis in a temporary folder unless ``REDIS_URL`` is set) with N
callers, each with a profile, ``--facts`` facts carrying 384-dimension compact embeddings, ten
exchanges of recent turns and a current call-start digest, then times ``MemoryStore.load``
sequentially and with 100 loads in flight, the call start with 100 in flight, and reads
``MEMORY USAGE`` of every key of a sample of callers.

A call start is what ``MemoryContextProcessor`` does with a caller's memory: the read
(``load_call_start``: the caller's digest, or the bounded path when it is missing or stale),
the fact selection (``call_start_facts``) and the rendering (``render_memory``). The call-start
rows time it for one caller each with 20, 1,000 and 10,000 facts (the cap is lifted so such a
caller exists), lexical (no embedder) and with the E5 model (stored vectors, the purpose
embedded once as the bot does at start-up), from the digest and, side by side, without one
(the bounded path).

Everything runs on the event loop the bot serves calls on (uvloop: see :func:`bench.report.run`);
the table's title names it.
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
from bench.report import EVENT_LOOP, percentile, print_report, progress, run
from memory.models import CallAnalysis, CallRecord, Fact, Turn, now
from memory.privacy.identity import CallerIdentity, identify
from memory.recall.call_start import call_start_spec, load_call_start, rebuild_digest
from memory.recall.embeddings import E5Embedder, Embedder, encode_compact
from memory.recall.ranking import call_start_facts, warm_purpose
from memory.recall.render import render_memory
from memory.runtime import freeze_startup_objects
from memory.store.callers import MemoryStore
from memory.store.digest import CallStartSpec

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
    vector = rng.standard_normal(DIM).astype(np.float32)
    return encode_compact(vector / np.linalg.norm(vector))


def spec_for(embedder: Embedder | None) -> CallStartSpec:
    """The bot's call start with its default budgets."""
    return call_start_spec(
        purpose=PURPOSE, token_budget=TOKEN_BUDGET, max_facts=MAX_FACTS, embedder=embedder
    )


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
    # Numbered as the store numbers them (written directly: the fill is the slow part).
    turns = [
        Turn(
            seq=j + 1,
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
    await rebuild_digest(store, caller, None)


async def fill(store: MemoryStore, redis: Redis, callers: int, n_facts: int, seed: int) -> float:
    started = time.perf_counter()
    await store.request_digest(caller_for(0), spec_for(None))  # as the bot's first call start
    indexes = iter(progress(range(callers), f"Filling {callers} callers", total=callers))

    async def worker() -> None:
        for i in indexes:
            await fill_one(store, redis, i, n_facts, seed)

    await asyncio.gather(*(worker() for _ in range(FILL_CONCURRENCY)))
    return time.perf_counter() - started


async def background_rewrite_done(redis: Redis) -> None:
    """Wait until Redis is not rewriting its append-only file.

    Filling many callers in minutes grows the file past its rewrite threshold, and the rewrite
    (a forked child writing the whole data set) takes one of this machine's two cores for
    tens of seconds: the fill's doing, not the call path's, so nothing is timed meanwhile.
    """
    while True:
        persistence = await redis.info("persistence")
        if not (
            persistence.get("aof_rewrite_in_progress") or persistence.get("aof_rewrite_scheduled")
        ):
            return
        await asyncio.sleep(0.5)


async def timed_call_start(
    store: MemoryStore, caller: CallerIdentity, embedder: Embedder | None
) -> float:
    """Milliseconds for read + selection + rendering, the call start's memory work."""
    started = time.perf_counter()
    memory = await load_call_start(store, caller, spec_for(embedder))
    facts = call_start_facts(
        memory, purpose=PURPOSE, token_budget=TOKEN_BUDGET, max_facts=MAX_FACTS, embedder=embedder
    )
    block = render_memory(memory, facts, token_budget=TOKEN_BUDGET)
    elapsed = (time.perf_counter() - started) * 1000
    assert block, "a filled caller rendered no memory"
    return elapsed


async def seed_caller(
    store: MemoryStore,
    caller: CallerIdentity,
    n_facts: int,
    pick: random.Random,
    rng: np.random.Generator,
) -> None:
    """Store ``n_facts`` facts with vectors and a name for ``caller``.

    Its own function: the facts are garbage once stored, not objects every later collection of
    the timed call starts would scan.
    """
    facts = [
        Fact(
            text=f"Caller {' '.join(pick.sample(_WORDS, 6))}",
            confidence=round(pick.uniform(0.5, 1.0), 2),
            source_call_id="bench",
            embedding=compact_embedding(rng),
        )
        for _ in range(n_facts)
    ]
    for start in range(0, n_facts, 500):
        await store.upsert_facts(caller, facts[start : start + 500])
    await store.set_name(caller, "Sam")


async def call_start_rows(
    redis: Redis, prefix: str, samples: int, seed: int, e5: Embedder | None
) -> dict[str, float]:
    """p50/p99 of the call start per size in ``CALL_START_FACTS``, digest and bounded path.

    ``e5`` is loaded, with the purpose embedded, before start-up's objects are frozen, as the bot
    does.
    """
    store = MemoryStore(redis, prefix=f"{prefix}-start", max_facts=0)
    pick = random.Random(seed)
    rng = np.random.default_rng(seed)
    rows: dict[str, float] = {}
    modes: list[tuple[str, Embedder | None]] = [("lexical", None)]
    if e5 is not None:
        modes.append(("e5", e5))
    for n_facts in CALL_START_FACTS:
        caller = caller_for(10_000_000 - n_facts)
        await seed_caller(store, caller, n_facts, pick, rng)
        runs = max(20, samples // 10 if n_facts < 10_000 else samples // 50)
        for mode, embedder in modes:
            for path in ("digest", "bounded"):
                await store.request_digest(caller, spec_for(embedder))  # publishes the spec
                await store.digest_requests()
                if path == "digest":
                    assert await rebuild_digest(store, caller, embedder)
                else:
                    await redis.delete(store.key_for(caller, "digest"))
                times = []
                for attempt in range(5 + runs):
                    if path == "bounded":
                        await redis.delete(store.key_for(caller, "digest"))
                    elapsed = await timed_call_start(store, caller, embedder)
                    if attempt >= 5:  # the first few warm the interpreter
                        times.append(elapsed)
                name = f"call_start_{n_facts}_{mode}" + ("" if path == "digest" else "_bounded")
                rows[f"{name}_p50_ms"] = round(statistics.median(times), 3)
                rows[f"{name}_p99_ms"] = round(percentile(times, 0.99), 3)
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
    await background_rewrite_done(redis)
    e5 = None if args.no_e5 else E5Embedder()
    if e5 is not None:
        warm_purpose(e5, PURPOSE)  # the bot loads the model and embeds its purpose at start-up
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
    starts: list[float] = []
    for _ in range(max(1, args.samples // 100)):
        batch = [caller_for(pick.randrange(args.callers)) for _ in range(100)]
        concurrent += await asyncio.gather(*(timed_load(store, c) for c in batch))
        batch = [caller_for(pick.randrange(args.callers)) for _ in range(100)]
        starts += await asyncio.gather(*(timed_call_start(store, c, None) for c in batch))
    sizes = []
    for i in pick.sample(range(args.callers), min(200, args.callers)):
        caller = caller_for(i)
        keys = [
            store.key_for(caller, part)
            for part in ("profile", "facts", "emb", "turns", "calls", "callstate", "digest")
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
        "call_start_p50_concurrent_ms": round(statistics.median(starts), 3),
        "call_start_p99_concurrent_ms": round(percentile(starts, 0.99), 3),
        "bytes_per_caller": round(statistics.mean(sizes)),
        **await call_start_rows(redis, store_prefix, args.samples, args.seed, e5),
    }


async def benchmark(args: argparse.Namespace) -> dict[str, float]:
    async with benchmark_redis(f"bench-{os.getpid()}") as redis:
        return await measure(args, redis)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", type=int, default=10_000)
    parser.add_argument("--facts", type=int, default=20)
    parser.add_argument("--samples", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-e5", action="store_true", help="time the call start lexically only")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = run(benchmark(args))
    print_report(
        f"MemoryStore.load: {args.callers} callers x {args.facts} facts ({EVENT_LOOP} loop)",
        result,
        targets={
            "p99_ms": "<= 2",
            "p99_concurrent_ms": "<= 20",
            "call_start_p99_concurrent_ms": "<= 20",
            "bytes_per_caller": "<= 16384",
            **{
                f"call_start_{n}_{mode}_p99_ms": "<= 2"
                for n in CALL_START_FACTS
                for mode in ("lexical", "e5")
            },
            **{
                f"call_start_{n}_{mode}_bounded_p99_ms": "<= 150"
                for n in CALL_START_FACTS
                for mode in ("lexical", "e5")
            },
        },
        as_json=args.json,
    )


if __name__ == "__main__":
    main()
