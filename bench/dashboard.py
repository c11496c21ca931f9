"""Dashboard server time at scale: the follow-up list's first page and a caller search.

    python -m bench.dashboard --calls 100000 --json

Fills one agent with ``--calls`` analysed calls (one caller per ``--calls-per-caller`` calls,
urgencies and actions spread evenly over the last 30 days; written in bulk with the index's own
``add_to``, as ``record_call`` leaves them), then times requests through the
dashboard's own ASGI app (routing, Redis reads, template rendering; no network): the first page
of follow-ups, the first page filtered by action, and a search by a number typed in a national
format (the keyed-hash lookup and its redirect). Target: p95 <= 50 ms, flat from 10k calls.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import time

import httpx
from redis.asyncio import Redis

from bench.redis_target import benchmark_redis
from bench.report import percentile, print_report
from memory.models import CallAnalysis, CallRecord, CallStatus
from memory.privacy.identity import CallerIdentity, identify
from memory.store.audit import AuditLog
from memory.store.callers import MemoryStore
from memory.store.keys import KeyLayout, agent_call_member
from memory.store.queue import AnalysisQueue
from web.dashboard import DashboardAccess, DashboardMemory, dashboard_app

AGENT = "bench"
PEPPER = b"bench-pepper-0123456789abcdef012"
ACTIONS = ("call_back", "send_quote", "book_appointment", "none")
DAY = 86_400


def number_of(i: int) -> str:
    return f"+1 415 6{i // 10_000 % 100:02d} {i % 10_000:04d}"


def caller_of(i: int) -> CallerIdentity:
    caller = identify(number_of(i), agent_id=AGENT, pepper=PEPPER)
    assert caller is not None
    return caller


def analysed_call(i: int, per_caller: int, now: float) -> tuple[CallerIdentity, CallRecord]:
    pick = random.Random(i)
    caller = caller_of(i // per_caller)
    at = now - pick.random() * 30 * DAY
    analysis = CallAnalysis(
        summary="Wants a quote for a birthday cake for twenty people on Saturday.",
        urgency=pick.randint(1, 5),
        action=ACTIONS[i % len(ACTIONS)],
        sentiment=pick.choice(("satisfied", "neutral", "frustrated")),
        language="en",
        caller_name="Ana",
    )
    record = CallRecord(
        call_id=f"call-{i}",
        agent_id=AGENT,
        status=CallStatus.ANALYSED,
        started_at=at - 90,
        ended_at=at,
        masked_number=caller.masked,
        analysis=analysis,
    )
    return caller, record


async def fill(store: MemoryStore, redis: Redis, calls: int, per_caller: int) -> float:
    """Write the calls in bulk: what ``record_call`` leaves (record, profile, indexes)."""
    started = time.perf_counter()
    now = time.time()
    keys = KeyLayout(store.key_for(caller_of(0), "x").split(":", 1)[0])
    pipe = redis.pipeline(transaction=False)
    for i in range(calls):
        caller, record = analysed_call(i, per_caller, now)
        at = record.ended_at or now
        record_key, _ = keys.call(caller, record.call_id)
        pipe.set(record_key, record.model_dump_json(exclude={"transcript"}, exclude_defaults=True))
        pipe.hset(
            keys.caller(caller, "profile"),
            mapping={"masked_number": caller.masked, "name": "Ana", "last_seen": repr(at)},
        )
        pipe.zadd(keys.agent(AGENT, "callers"), {caller.key: at}, gt=True)
        pipe.zadd(keys.agent(AGENT, "calls"), {agent_call_member(caller.key, record.call_id): at})
        store.followups.add_to(pipe, caller, record)
        if i % 500 == 499:
            await pipe.execute()
    await pipe.execute()
    return time.perf_counter() - started


async def timed(client: httpx.AsyncClient, url: str, expect: int) -> float:
    started = time.perf_counter()
    response = await client.get(url)
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == expect, (url, response.status_code)
    return elapsed


async def measure(args: argparse.Namespace, redis: Redis) -> dict[str, float]:
    prefix = f"bench-{os.getpid()}"
    store = MemoryStore(redis, prefix=prefix)
    fill_seconds = await fill(store, redis, args.calls, args.calls_per_caller)
    memory = DashboardMemory(
        agent_id=AGENT,
        store=store,
        queue=AnalysisQueue(redis, prefix=prefix),
        audit=AuditLog(redis, prefix=prefix),
        identify=lambda raw: identify(raw, agent_id=AGENT, pepper=PEPPER),
    )
    app = dashboard_app(
        access=DashboardAccess(password=None, key=secrets.token_bytes(32)), memory=lambda: memory
    )
    callers = max(1, args.calls // args.calls_per_caller)
    pick = random.Random(args.seed)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for _ in range(20):  # warm up: imports, template compilation, connections
            await timed(client, "/dashboard", 200)
        first_page = [await timed(client, "/dashboard", 200) for _ in range(args.samples)]
        by_action = [
            await timed(client, "/dashboard?action=call_back&period=7d", 200)
            for _ in range(args.samples)
        ]
        searches = []
        for _ in range(args.samples):
            i = pick.randrange(callers)
            national = f"(415) 6{i // 10_000 % 100:02d}-{i % 10_000:04d}"
            searches.append(await timed(client, f"/dashboard/callers?number={national}", 303))
    return {
        "calls": args.calls,
        "fill_s": round(fill_seconds, 1),
        "followups_p50_ms": round(statistics.median(first_page), 2),
        "followups_p95_ms": round(percentile(first_page, 0.95), 2),
        "followups_by_action_p50_ms": round(statistics.median(by_action), 2),
        "followups_by_action_p95_ms": round(percentile(by_action, 0.95), 2),
        "search_p50_ms": round(statistics.median(searches), 2),
        "search_p95_ms": round(percentile(searches, 0.95), 2),
    }


async def run(args: argparse.Namespace) -> dict[str, float]:
    async with benchmark_redis(f"bench-{os.getpid()}") as redis:
        return await measure(args, redis)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--calls-per-caller", type=int, default=4)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    target = "<= 50"
    print_report(
        f"Dashboard server time: {args.calls} calls",
        result,
        targets={
            "followups_p95_ms": target,
            "followups_by_action_p95_ms": target,
            "search_p95_ms": target,
        },
        as_json=args.json,
    )


if __name__ == "__main__":
    main()
