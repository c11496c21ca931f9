"""The analysis webhook: each analysis posted signed and retried; a hook that is down loses none."""

from __future__ import annotations

import json

from aiohttp import web
from pydantic import SecretStr

from memory.analysis.webhook import SIGNATURE_HEADER, signature_valid
from memory.analysis.worker import JobOutcome
from memory.metrics import REGISTRY
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue
from tests.fakes.anthropic_server import FakeAnthropic
from tests.support.analysis_answers import answer
from tests.support.polling import eventually
from tests.support.worker import (
    AGENT,
    WAIT_S,
    WorkerFactory,
    analysed_reply,
    hang_up,
    process_next,
)

WEBHOOK_SECRET = "webhook-secret-for-tests"


async def test_the_webhook_receives_each_analysis_signed_and_retried(
    store: MemoryStore, queue: AnalysisQueue, make_worker: WorkerFactory, fake: FakeAnthropic
) -> None:
    received: list[tuple[bytes, str]] = []
    statuses = [503, 200]

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers.get(SIGNATURE_HEADER, "")))
        return web.Response(status=statuses.pop(0))

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.script(analysed_reply())
    failed_before = _webhook_failures("other")
    try:
        who = await hang_up(store, queue, "call-1")
        async with make_worker(
            webhook_url=f"http://127.0.0.1:{port}/hook", webhook_secret=SecretStr(WEBHOOK_SECRET)
        ) as worker:
            assert await process_next(worker) == JobOutcome.ANALYSED
            await eventually(lambda: len(received) == 2, within=WAIT_S)
    finally:
        await runner.cleanup()

    assert _webhook_failures("other") == failed_before + 1  # the 503
    for body, signature in received:
        assert signature.startswith("sha256=")
        assert signature_valid(body, signature, WEBHOOK_SECRET)
        assert not signature_valid(body + b" ", signature, WEBHOOK_SECRET)
    payload = json.loads(received[-1][0])
    assert payload["event"] == "call.analysed"
    assert (payload["agent_id"], payload["call_id"], payload["caller"]) == (
        AGENT,
        "call-1",
        who.masked,
    )
    assert payload["analysis"]["summary"] == answer()["summary"]
    assert [m["text"] for m in payload["memories"]["written"]] == [
        "Caller orders cakes for Fridays"
    ]
    assert "555 0123" not in received[-1][0].decode() and "5550123" not in received[-1][0].decode()


async def test_a_webhook_that_is_down_loses_nothing(
    store: MemoryStore, queue: AnalysisQueue, make_worker: WorkerFactory, fake: FakeAnthropic
) -> None:
    fake.script(analysed_reply())
    unreachable_before = _webhook_failures("unreachable")
    who = await hang_up(store, queue, "call-1")
    # Nothing listens on port 9 (discard): every attempt fails to connect.
    async with make_worker(
        webhook_url="http://127.0.0.1:9/hook",
        webhook_secret=SecretStr(WEBHOOK_SECRET),
        webhook_retries=1,
    ) as worker:
        assert await process_next(worker) == JobOutcome.ANALYSED
    assert (await store.load(who)).profile.name == "Marta"
    assert (await queue.counts()).pending == 0
    assert _webhook_failures("unreachable") >= unreachable_before + 1


def _webhook_failures(kind: str) -> float:
    labels = {"service": "webhook", "kind": kind}
    return REGISTRY.get_sample_value("rapport_service_errors_total", labels) or 0.0
