"""Two bot processes on one Redis: any process serves any request of a call.

Each bot is ``runner.py``'s serving path in its own subprocess (``tests/fakes/text_bot.py``), both
on the session's Redis under this test's key prefix, as two replicas behind a round-robin proxy
are: a ``/v1`` call started on one, its turns on the other, ended on the first; a Vapi call
whose requests alternate; a dashboard login on one used on the other; a bot killed between two
turns of a call, the call finished on the other with every turn kept.

The two bots of a pair start together (as replicas do). The tests that neither analyse nor kill
share one pair for the module (:func:`shared_bots`: a Vapi call, and the logins under names of
their own); the others get a pair of their own, on a key prefix of their own.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from memory.analysis.analyzer import TOOL_NAME
from memory.analysis.worker import AnalysisWorker, JobOutcome
from memory.models import Fact
from memory.privacy.identity import CallerIdentity, identify
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue
from tests.fakes.anthropic_server import FakeAnthropic, Reply
from tests.fakes.text_bot import RunningBot, bot_env, running_bot
from tests.support.analysis_answers import answer
from tests.support.background import BackgroundLoop
from tests.support.values import PEPPER
from web.dashboard.throttle import MAX_FAILURES

#: Runs subprocesses (see pyproject.toml).
pytestmark = pytest.mark.slow

AGENT = "bakery"
ANA = "+14155550123"
ATTESTED = "TN-Validation-Passed-A"
API_KEY = "two-bots-api-key-0123456789"
VAPI_SECRET = "two-bots-vapi-secret-0123456789"
PASSWORD = "a-long-dashboard-password"
REPLY = "Of course, Ana."

BotPair = tuple[RunningBot, RunningBot]


async def remember_ana(redis_client: Redis, key_prefix: str) -> CallerIdentity:
    """A caller with a fact on record, so her memory block is not empty."""
    caller = identify(ANA, agent_id=AGENT, pepper=PEPPER.encode())
    assert caller is not None
    store = MemoryStore(redis_client, prefix=key_prefix)
    await store.upsert_facts(caller, [Fact(text="Caller is vegetarian", confidence=0.9)])
    return caller


@pytest.fixture
async def ana(redis_client: Redis, key_prefix: str) -> CallerIdentity:
    """Ana, under this test's own key prefix."""
    return await remember_ana(redis_client, key_prefix)


@asynccontextmanager
async def bot_pair(
    folder: Path, redis_url: str, key_prefix: str, anthropic_url: str
) -> AsyncIterator[BotPair]:
    """Two bots on the same Redis, key prefix, secrets and dashboard key file, started at once."""
    env = bot_env(
        redis_url,
        key_prefix,
        anthropic_url,
        RAPPORT_AGENT_ID=AGENT,
        RAPPORT_API_KEY=API_KEY,
        RAPPORT_VAPI_SECRET=VAPI_SECRET,
        RAPPORT_VAPI_ASSISTANT_ID="assistant-two-bots",
        RAPPORT_UNVERIFIED_CALLERS="full",  # Vapi relays no attestation
        RAPPORT_DASHBOARD_PASSWORD=PASSWORD,
        RAPPORT_DASHBOARD_KEY_FILE=str(folder / "shared" / "dashboard-key"),
    )
    async with AsyncExitStack() as stack:

        async def start(name: str) -> RunningBot:
            (folder / name).mkdir()
            bot = running_bot(env=env, folder=folder / name, secrets=(ANA, ANA[2:]))
            return await stack.enter_async_context(bot)

        # Every start is awaited (and a started bot stopped) even when the other one fails.
        started = await asyncio.gather(start("a"), start("b"), return_exceptions=True)
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        a, b = started
        assert isinstance(a, RunningBot) and isinstance(b, RunningBot)
        yield a, b


@pytest.fixture
async def bots(
    tmp_path: Path, redis_url: str, key_prefix: str, fake: FakeAnthropic
) -> AsyncIterator[BotPair]:
    """A pair of this test's own (it analyses, or kills a bot), on its own key prefix."""
    async with bot_pair(tmp_path, redis_url, key_prefix, fake.base_url) as pair:
        yield pair


@pytest.fixture(scope="module")
def shared_bots(
    background: BackgroundLoop,
    tmp_path_factory: pytest.TempPathFactory,
    redis_url: str,
    module_prefix: str,
    module_fake: FakeAnthropic,
) -> BotPair:
    """The pair the module's tests share: each uses its own names and call ids on it."""
    folder = tmp_path_factory.mktemp("two-bots")
    return background.enter(bot_pair(folder, redis_url, module_prefix, module_fake.base_url))


def _api(bot: RunningBot) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {API_KEY}"}
    return httpx.AsyncClient(base_url=bot.url, headers=headers, timeout=20)


def _vapi(bot: RunningBot) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=bot.url, headers={"x-vapi-secret": VAPI_SECRET}, timeout=20)


async def _queued(redis_client: Redis, key_prefix: str) -> list[str]:
    queue = AnalysisQueue(redis_client, prefix=key_prefix)
    entries = await redis_client.xrange(queue.stream_key)
    return [fields[b"call"].decode() for _, fields in entries]


async def _transcript(
    redis_client: Redis, key_prefix: str, caller: CallerIdentity, call_id: str
) -> list[tuple[str, str]]:
    record = await MemoryStore(redis_client, prefix=key_prefix).get_call(caller, call_id)
    assert record is not None and record.status != "open"
    return [(turn.role, turn.text) for turn in record.transcript]


TURNS = [
    {"role": "assistant", "text": "Hello, Bella's Bakery."},
    {"role": "user", "text": "Hi, it's Ana. A cake for Friday, please."},
    {"role": "assistant", "text": "Of course, Ana."},
    {"role": "user", "text": "Chocolate, no eggs."},
]


async def test_a_v1_call_started_on_one_bot_is_served_by_the_other_and_analysed_once(
    bots: BotPair,
    ana: CallerIdentity,
    redis_client: Redis,
    key_prefix: str,
    fake: FakeAnthropic,
    worker: AnalysisWorker,
) -> None:
    a, b = bots
    start = {"caller_number": ANA, "attestation": ATTESTED, "platform_call_id": "v1-two"}
    async with _api(a) as on_a, _api(b) as on_b:
        started = (await on_a.post("/v1/calls", json=start)).json()
        assert started["remembered"] and "vegetarian" in started["memory"]
        for turns in (TURNS[:2], TURNS[2:]):
            recorded = await on_b.post("/v1/calls/v1-two/turns", json={"turns": turns})
            assert recorded.json() == {"recorded": 2}
            # A retried start, on b: the same call, as it started on a.
            assert (await on_b.post("/v1/calls", json=start)).json() == started
        ended = await on_a.post("/v1/calls/v1-two/end", json={"reason": "caller hung up"})
        assert ended.json() == {"call_id": "v1-two", "recorded": True}
        assert (await on_b.post("/v1/calls/v1-two/end", json={})).status_code == 200
        late = await on_b.post("/v1/calls/v1-two/turns", json={"turns": TURNS[:1]})
        assert late.status_code == 409
    assert await _queued(redis_client, key_prefix) == ["v1-two"]
    said = await _transcript(redis_client, key_prefix, ana, "v1-two")
    assert said == [(turn["role"], turn["text"]) for turn in TURNS]

    fake.script(Reply.tool_call(TOOL_NAME, answer(caller_name="Ana")))
    job = await worker.next_job()
    assert job is not None and job.call_id == "v1-two"
    assert await worker.process(job) == JobOutcome.ANALYSED
    assert await worker.next_job() is None  # analysed once


def _chat(call_id: str, *said: str) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "Be brief."}]
    for index, text in enumerate(said):
        messages.append({"role": "user" if index % 2 == 0 else "assistant", "content": text})
    return {
        "model": "rapport",
        "messages": messages,
        "stream": False,
        "call": {"id": call_id, "customer": {"number": ANA}},
    }


async def test_a_vapi_call_whose_requests_alternate_between_the_bots(
    shared_bots: BotPair, redis_client: Redis, module_prefix: str, module_fake: FakeAnthropic
) -> None:
    a, b = shared_bots
    ana = await remember_ana(redis_client, module_prefix)
    call = {"id": "vapi-two", "customer": {"number": ANA}}
    async with _vapi(a) as on_a, _vapi(b) as on_b:
        ringing = {"message": {"type": "assistant-request", "call": call}}
        assert (await on_a.post("/vapi/events", json=ringing)).status_code == 200
        said = ["Hi, a cake for Friday.", REPLY, "Chocolate, please."]
        module_fake.script(Reply.text(REPLY), Reply.text(REPLY))
        for client, turn in ((on_b, 1), (on_a, 3)):
            reply = await client.post(
                "/vapi/chat/completions", json=_chat("vapi-two", *said[:turn])
            )
            assert reply.json()["choices"][0]["message"]["content"] == REPLY
        # Both bots put the same memory block in the prompt: the one the call started with.
        prompts = [request.system_text for request in module_fake.requests[-2:]]
        assert prompts[0] == prompts[1] and "vegetarian" in prompts[0]
        report = {
            "type": "end-of-call-report",
            "endedReason": "customer-ended-call",
            "call": call,
            "artifact": {
                "messages": [
                    {"role": "user" if i % 2 == 0 else "bot", "message": text}
                    for i, text in enumerate([*said, REPLY])
                ]
            },
        }
        for client in (on_b, on_a):  # Vapi may report twice: once it counts
            sent = await client.post("/vapi/events", json={"message": report})
            assert sent.status_code == 200
    assert await _queued(redis_client, module_prefix) == ["vapi-two"]
    transcript = await _transcript(redis_client, module_prefix, ana, "vapi-two")
    assert [text for _, text in transcript] == [*said, REPLY]


async def _login(client: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    form = await client.get("/dashboard/login")
    match = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert match is not None
    return await client.post(
        "/dashboard/login", data={"name": name, "password": password, "csrf": match[1]}
    )


async def test_a_dashboard_login_on_one_bot_holds_on_the_other(shared_bots: BotPair) -> None:
    a, b = shared_bots
    async with httpx.AsyncClient(base_url=a.url) as on_a:
        logged_in = await _login(on_a, "Marta", PASSWORD)
        assert logged_in.status_code == 303 and logged_in.headers["location"] == "/dashboard"
        session = on_a.cookies.get("rapport_session")
    assert session
    async with httpx.AsyncClient(base_url=b.url) as on_b:
        assert (await on_b.get("/dashboard")).status_code == 303  # no session: to the login
        on_b.cookies.set("rapport_session", session, path="/dashboard")
        page = await on_b.get("/dashboard")
    assert page.status_code == 200 and "Marta" in page.text


async def test_failed_logins_on_one_bot_count_on_the_other(shared_bots: BotPair) -> None:
    a, b = shared_bots
    async with httpx.AsyncClient(base_url=a.url) as on_a, httpx.AsyncClient(base_url=b.url) as on_b:
        for attempt in range(MAX_FAILURES):
            wrong = await _login(on_a if attempt % 2 else on_b, "Jordi", "not-the-password")
            assert wrong.status_code == 401
        assert (await _login(on_a, "Jordi", PASSWORD)).status_code == 429
        assert (await _login(on_b, "Jordi", PASSWORD)).status_code == 429
        assert (await _login(on_b, "Marta", PASSWORD)).status_code == 303  # only that name


async def test_a_bot_killed_between_two_turns_loses_none_and_the_other_finishes_the_call(
    bots: BotPair, ana: CallerIdentity, redis_client: Redis, key_prefix: str
) -> None:
    a, b = bots
    start = {"caller_number": ANA, "attestation": ATTESTED, "platform_call_id": "v1-killed"}
    async with _api(a) as on_a, _api(b) as on_b:
        assert (await on_a.post("/v1/calls", json=start)).status_code == 200
        first = await on_a.post("/v1/calls/v1-killed/turns", json={"turns": TURNS[:2]})
        assert first.json() == {"recorded": 2}
        a.process.send_signal(signal.SIGKILL)  # no shutdown, no drain: gone
        await a.process.wait()
        second = await on_b.post("/v1/calls/v1-killed/turns", json={"turns": TURNS[2:]})
        assert second.json() == {"recorded": 2}
        assert (await on_b.post("/v1/calls/v1-killed/end", json={})).status_code == 200
    assert await _queued(redis_client, key_prefix) == ["v1-killed"]
    said = await _transcript(redis_client, key_prefix, ana, "v1-killed")
    assert said == [(turn["role"], turn["text"]) for turn in TURNS]
