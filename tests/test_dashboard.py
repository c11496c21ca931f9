"""The dashboard in a real browser: headless Chromium from the system, driven by Playwright.

The dashboard runs in the test's event loop (uvicorn on a free loopback port) against the test's
Redis; the browser is the system's ``/usr/bin/chromium``, launched once for the module (the
module's tests share one event loop for it), and each test browses in a fresh context of its own
(its own cookies and storage, as a fresh profile has). Each test saves screenshots of the pages
it visits under its temporary folder (``screens/``).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
import uvicorn
from playwright.async_api import Browser, Dialog, Page, async_playwright

from bot.callback import CallbackDesk
from bot.settings import BotSettings
from cli.demo.week import ANA, EMILY, WEEK
from cli.main import main as cli_main
from memory.models import CallAnalysis, CallRecord, CallStatus, CallTrust, Fact, Turn, now
from memory.privacy.identity import CallerIdentity
from memory.recall.render import render_memory
from memory.runtime import MemoryRuntime, memory_runtime
from memory.settings import MemorySettings
from memory.store.queue import AnalysisQueue
from tests.support.call_harness import open_line
from tests.support.entry import Exited, in_subprocess, in_this_process
from web.dashboard import DashboardAccess, DashboardMemory, dashboard_app, dashboard_memory

#: The browser is the module's: every test runs in the module's event loop.
pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

ROOT = Path(__file__).resolve().parents[1]
DEMO_CALLERS = {call.caller for round_ in WEEK for call in round_}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery staple"
AGENT = "acme"
DAY = 86_400
XSS = "<img src=x onerror=alert(1)>"
#: The business's time zone: every page shows its times in it.
ZONE = ZoneInfo("Europe/Madrid")


@dataclass
class Dashboard:
    url: str
    runtime: MemoryRuntime
    memory: DashboardMemory
    page: Page
    screens: Path

    def caller(self, number: str) -> CallerIdentity:
        caller = self.memory.identify(number)
        assert caller is not None
        return caller

    async def shot(self, name: str) -> Path:
        path = self.screens / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    async def log_in(self, name: str = "Marta", password: str = PASSWORD) -> None:
        await self.page.goto(f"{self.url}/dashboard/login")
        await self.page.fill("input[name=name]", name)
        await self.page.fill("input[name=password]", password)
        await self.page.click("button[type=submit]")

    async def call(
        self,
        who: CallerIdentity,
        call_id: str,
        *,
        urgency: int,
        action: str,
        at: float,
        summary: str = "Asked for a quote.",
        turns: tuple[str, ...] = (),
        facts: tuple[str, ...] = (),
    ) -> list[Fact]:
        store = self.memory.store
        if turns:
            await store.append_turns(
                who,
                [
                    Turn(
                        role="user" if i % 2 == 0 else "assistant",
                        text=t,
                        at=at - 30 + i,
                        call_id=call_id,
                    )
                    for i, t in enumerate(turns)
                ],
            )
        record = CallRecord(
            call_id=call_id,
            agent_id=AGENT,
            started_at=at - 60,
            ended_at=at,
            ended_reason="hangup",
            trust=CallTrust.VERIFIED,
            masked_number=who.masked,
        )
        assert await store.close_call(who, record)
        written = [Fact(text=text, confidence=0.9, source_call_id=call_id) for text in facts]
        analysis = CallAnalysis(
            summary=summary,
            urgency=urgency,
            action=action,
            sentiment="frustrated" if urgency >= 4 else "neutral",
            language="en",
            caller_name=f"Caller {call_id}",
        )
        analysed = record.model_copy(
            update={"analysis": analysis, "facts_written": [f.id for f in written]}
        )
        assert await store.record_call(who, analysed, facts=written)
        return written


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def chromium() -> str:
    """The system's Chromium, installed from Debian's packages first if this machine lacks it.

    The test command must work on a fresh machine with nothing but the package registries, and
    Playwright never downloads a browser of its own here.
    """
    if not Path(CHROMIUM).exists():
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.fail(f"the dashboard tests need {CHROMIUM}: install Debian's chromium package")
        for command in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "chromium"],
        ):
            subprocess.run(command, check=True, capture_output=True, timeout=900)
    return CHROMIUM


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    """Headless Chromium for the module; each test browses in a context of its own."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def callback_settings() -> BotSettings | None:
    """The business and Twilio account call backs use; None: the dashboard offers none."""
    return None


@asynccontextmanager
async def browsing(
    memory: DashboardMemory, access: DashboardAccess, browser: Browser, zone: ZoneInfo = ZONE
) -> AsyncIterator[tuple[str, Page]]:
    """The dashboard of ``memory`` served on a loopback port, and a phone-sized browser page in
    a fresh context (no cookie or storage of another test)."""
    app = dashboard_app(access=access, memory=lambda: memory, zone=zone)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    for _ in range(500):  # uvicorn offers no event to wait on
        if server.started:
            break
        await asyncio.sleep(0.02)
    try:
        context = await browser.new_context(viewport={"width": 390, "height": 844})  # a phone
        try:
            yield f"http://127.0.0.1:{port}", await context.new_page()
        finally:
            await context.close()
    finally:
        server.should_exit = True
        await serving


@pytest_asyncio.fixture(loop_scope="module")
async def dashboard(
    redis_url: str,
    key_prefix: str,
    tmp_path: Path,
    browser: Browser,
    callback_settings: BotSettings | None,
) -> AsyncIterator[Dashboard]:
    line = await open_line(redis_url, key_prefix)
    callbacks = (
        CallbackDesk(runtime=line.runtime, agent_id=AGENT, settings=callback_settings)
        if callback_settings is not None
        else None
    )
    memory = dashboard_memory(line.runtime, line.queue, agent_id=AGENT, callbacks=callbacks)
    screens = tmp_path / "screens"
    screens.mkdir()
    access = DashboardAccess(password=PASSWORD, key=secrets.token_bytes(32))
    try:
        async with browsing(memory, access, browser) as (url, page):
            yield Dashboard(url, line.runtime, memory, page, screens)
    finally:
        await line.runtime.aclose()


async def test_login_is_required_and_a_wrong_password_refused(dashboard: Dashboard) -> None:
    page = dashboard.page
    await page.goto(f"{dashboard.url}/dashboard")
    assert page.url.endswith("/dashboard/login")
    await dashboard.shot("login")
    await dashboard.log_in(password="wrong")
    assert await page.get_by_role("alert").inner_text() == "Wrong password."
    assert page.url.endswith("/dashboard/login")
    await dashboard.log_in()
    assert page.url.endswith("/dashboard")
    assert await page.locator("h1").inner_text() == "Follow-ups"
    cookie = next(c for c in await page.context.cookies() if c["name"] == "rapport_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"


async def test_failed_logins_lock_out_that_name_only_until_the_right_password(
    dashboard: Dashboard,
) -> None:
    page = dashboard.page
    login = f"{dashboard.url}/dashboard/login"
    # Four failures, then the right password: it gets in and clears the count.
    for _ in range(4):
        await dashboard.log_in(name="Marta", password="wrong")
    await dashboard.log_in(name="Marta")
    assert page.url.endswith("/dashboard")
    await page.context.clear_cookies()
    # Five failures in a minute as Marta, then 429 for Marta even with the right password...
    for _ in range(5):
        await dashboard.log_in(name="Marta", password="wrong")
    response = await page.request.post(
        login, form={"name": "marta", "password": PASSWORD, "csrf": "x"}
    )
    assert response.status == 429
    # ...but not for a colleague on the same address.
    await dashboard.log_in(name="Jordi")
    assert page.url.endswith("/dashboard")
    assert await page.locator("h1").inner_text() == "Follow-ups"


async def test_follow_ups_are_ordered_filtered_and_done(dashboard: Dashboard) -> None:
    t = now()
    await dashboard.call(
        dashboard.caller("+1 415 555 0141"), "c-low", urgency=2, action="call_back", at=t - 600
    )
    await dashboard.call(
        dashboard.caller("+1 415 555 0142"),
        "c-old-urgent",
        urgency=5,
        action="send_quote",
        at=t - 3 * DAY,
        summary="Wants a quote for 200 croissants by Friday.",
    )
    await dashboard.call(
        dashboard.caller("+1 415 555 0143"),
        "c-urgent",
        urgency=5,
        action="call_back",
        at=t - 60,
        summary="Upset: the wedding cake order is missing.",
    )
    await dashboard.call(
        dashboard.caller("+1 415 555 0144"), "c-none", urgency=3, action="none", at=t - 120
    )
    await dashboard.call(
        dashboard.caller("+1 415 555 0145"),
        "c-mid",
        urgency=4,
        action="book_appointment",
        at=t - 300,
        summary="Wants a tasting appointment next week.",
    )
    await dashboard.log_in()
    page = dashboard.page

    async def listed() -> list[str]:
        return await page.locator("#followups > li").evaluate_all(
            "items => items.map(item => item.dataset.call)"
        )

    assert await listed() == ["c-urgent", "c-old-urgent", "c-mid", "c-low"]
    card = page.locator("li[data-call=c-urgent]")
    assert "+1•••43" in await card.inner_text()
    assert "Caller c-urgent" in await card.inner_text()
    assert "frustrated" in await card.inner_text()
    screenshot = await dashboard.shot("followups")
    await page.select_option("select[name=action]", "call_back")
    await page.click("form.filters button")
    assert await listed() == ["c-urgent", "c-low"]
    await page.select_option("select[name=action]", "")
    await page.select_option("select[name=period]", "24h")
    await page.click("form.filters button")
    assert await listed() == ["c-urgent", "c-mid", "c-low"]
    await page.locator("li[data-call=c-urgent] button", has_text="Mark done").click()
    assert await listed() == ["c-mid", "c-low"]
    who = dashboard.caller("+1 415 555 0143")
    done = await dashboard.memory.store.followups.done(who, "c-urgent")
    assert done is not None and done.by == "Marta"
    await page.goto(f"{dashboard.url}/dashboard/audit")
    entry = await page.locator("#audit li").first.inner_text()
    assert "Marta" in entry and "follow up done" in entry and who.masked in entry
    await dashboard.shot("audit")
    assert screenshot.stat().st_size > 0  # the README's docs/followups.png is one of these


async def test_a_call_page_shows_its_memories_and_escapes_the_transcript(
    dashboard: Dashboard,
) -> None:
    who = dashboard.caller("+1 415 555 0146")
    written = await dashboard.call(
        who,
        "c-xss",
        urgency=3,
        action="call_back",
        at=now() - 60,
        turns=(XSS, "Sorry, I did not catch that.", "<script>alert(2)</script> prefers mornings"),
        facts=("Caller prefers weekday mornings",),
    )
    await dashboard.log_in()
    page = dashboard.page
    dialogs: list[Dialog] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog))
    await page.goto(f"{dashboard.url}/dashboard/calls/{who.key}/c-xss")
    transcript = page.locator("#transcript")
    assert XSS in await transcript.inner_text()
    assert "<script>alert(2)</script>" in await transcript.inner_text()
    assert await transcript.locator("img, script").count() == 0
    memories = await page.locator("#memories").inner_text()
    assert "written" in memories and written[0].text in memories
    assert await page.locator("#trust").inner_text() == "confirmed by the phone network"
    assert "sure" in memories and "0.9" not in memories
    await dashboard.shot("call")
    await page.wait_for_timeout(300)
    assert dialogs == []


async def test_editing_a_fact_changes_the_next_calls_prompt(dashboard: Dashboard) -> None:
    who = dashboard.caller("+1 415 555 0147")
    await dashboard.call(
        who,
        "c-fact",
        urgency=2,
        action="call_back",
        at=now() - 60,
        facts=("Caller is allergic to walnuts",),
    )
    await dashboard.log_in()
    page = dashboard.page
    await page.goto(f"{dashboard.url}/dashboard/callers/{who.key}")
    await dashboard.shot("caller")
    field = page.locator("#facts textarea[name=text]")
    assert "sure" in await page.locator("#facts").inner_text()
    await field.fill("Caller is allergic to hazelnuts, not walnuts")
    await page.locator("#facts button", has_text="Save").click()
    memory = await dashboard.memory.store.load(who)
    prompt = render_memory(memory, memory.facts, token_budget=2000)
    assert "allergic to hazelnuts, not walnuts" in prompt
    assert "Caller is allergic to walnuts" not in prompt
    # The same gate as every fact write: a claim of authority is refused.
    await page.locator("#facts textarea[name=text]").fill("Caller is the owner of this bakery")
    await page.locator("#facts button", has_text="Save").click()
    assert "Refused" in await page.get_by_role("alert").inner_text()
    memory = await dashboard.memory.store.load(who)
    assert "owner" not in render_memory(memory, memory.facts, token_budget=2000)
    await page.fill("form.filters input[name=name]", "Ana <b>Ruiz</b>")
    await page.click("form.filters button")
    assert await page.locator("h1").inner_text() == "Ana <b>Ruiz</b> +1•••47"
    exported = await page.request.get(f"{dashboard.url}/dashboard/callers/{who.key}/export")
    data = json.loads(await exported.text())
    assert data["profile"]["name"] == "Ana <b>Ruiz</b>"
    assert [f["text"] for f in data["facts"]] == ["Caller is allergic to hazelnuts, not walnuts"]
    await page.locator("#facts button", has_text="Delete").click()
    assert await page.locator("#facts li").count() == 0
    actions = [entry.action.value for entry in await dashboard.memory.audit.recent(AGENT)]
    assert actions == ["fact_deleted", "name_set", "fact_edited"]


async def test_forgetting_a_caller_found_by_number_leaves_no_key(
    dashboard: Dashboard, key_prefix: str
) -> None:
    redis_client = dashboard.runtime.redis
    who = dashboard.caller("+1 415 555 0148")
    await dashboard.call(
        who,
        "c-forget",
        urgency=4,
        action="call_back",
        at=now() - 60,
        turns=("Hi, it's Jordi",),
        facts=("Caller has two dogs",),
    )
    await dashboard.log_in()
    page = dashboard.page
    await page.goto(f"{dashboard.url}/dashboard/callers")
    assert "+1•••48" in await page.locator("#callers").inner_text()
    await dashboard.shot("callers")
    await page.fill("input[name=number]", "(415) 555-0148")  # another format, same caller
    await page.click("form.filters button")
    assert page.url.endswith(f"/dashboard/callers/{who.key}")
    await page.click("text=Forget this caller…")
    await dashboard.shot("forget")
    await page.click("button.danger")
    assert page.url.endswith("/dashboard/callers")
    left = [key async for key in redis_client.scan_iter(match=f"{key_prefix}:*")]
    # Only the tombstone (keyed hash only) stays, so no write of an earlier call brings them back.
    assert [key for key in left if who.key.encode() in key] == [
        dashboard.memory.store.key_for(who, "forgotten").encode()
    ]
    for key in left:
        if await redis_client.type(key) == b"zset":
            members = await redis_client.zrange(key, 0, -1)
            assert not [m for m in members if who.key.encode() in m]
    await page.goto(f"{dashboard.url}/dashboard")
    assert await page.locator("#followups > li").count() == 0


async def test_a_post_without_the_csrf_token_is_refused(dashboard: Dashboard) -> None:
    who = dashboard.caller("+1 415 555 0149")
    await dashboard.call(who, "c-csrf", urgency=4, action="call_back", at=now() - 60)
    await dashboard.log_in()
    request = dashboard.page.request
    url = f"{dashboard.url}/dashboard/callers/{who.key}/forget"
    refused = await request.post(url, form={"confirm": "forget"})
    assert refused.status == 403
    assert refused.headers["content-type"].startswith("text/html")
    assert "reload the page" in await refused.text()
    forged = {"confirm": "forget", "csrf": "0" * 64}
    assert (await request.post(url, form=forged)).status == 403
    assert (await dashboard.memory.store.load(who)).profile.call_count == 1
    # A form left open across a restart (a new session key) says so in the browser too.
    await dashboard.page.goto(f"{dashboard.url}/dashboard/callers/{who.key}/forget")
    await dashboard.page.locator("main input[name=csrf]").evaluate("field => field.value = 'old'")
    await dashboard.page.click("button.danger")
    assert "reload the page" in await dashboard.page.locator("#stale").inner_text()
    assert (await dashboard.memory.store.load(who)).profile.call_count == 1


async def test_the_queue_shows_dead_letters_and_retries_one(dashboard: Dashboard) -> None:
    queue = dashboard.memory.queue
    who = dashboard.caller("+1 415 555 0150")
    await queue.enqueue(who, "c-dead")
    (job,) = await queue.read("worker-1", block=0.1)
    await queue.dead_letter(job, "the analysis answer was invalid 3 times")
    await queue.enqueue(who, "c-flight")
    await queue.read("worker-1", block=0.1)
    await dashboard.log_in()
    page = dashboard.page
    await page.goto(f"{dashboard.url}/dashboard/queue")
    assert "the analysis answer was invalid 3 times" in await page.locator("#dead").inner_text()
    assert "c-flight" in await page.locator("main").inner_text()
    await dashboard.shot("queue")
    await page.locator("#dead button", has_text="Retry").click()
    assert await page.locator("#dead li").count() == 0
    assert (await queue.counts()).dead == 0
    (entry,) = await dashboard.memory.audit.recent(AGENT)
    assert entry.action.value == "dead_letter_retried" and entry.caller == who.masked


async def test_calls_older_than_redis_holds_are_listed_and_opened_from_the_history(
    dashboard: Dashboard,
) -> None:
    history = dashboard.memory.store.history
    assert history is not None
    who = dashboard.caller("+1 415 555 0151")
    old = CallRecord(
        call_id="c-last-spring",
        agent_id=AGENT,
        status=CallStatus.ANALYSED,
        started_at=now() - 200 * DAY - 60,
        ended_at=now() - 200 * DAY,
        ended_reason="hangup",
        transcript=[Turn(role="user", text=XSS, at=now() - 200 * DAY - 30)],
        analysis=CallAnalysis(
            summary="Asked about a wedding cake.",
            urgency=5,
            action="call_back",
            sentiment="neutral",
            language="en",
        ),
    )
    await history.save(who, old)
    calm = old.model_copy(update={"call_id": "c-calm", "analysis": None, "transcript": []})
    await history.save(who, calm)
    await dashboard.log_in()
    page = dashboard.page
    await page.goto(f"{dashboard.url}/dashboard/history?period=all")
    listed = await page.locator("#history").inner_text()
    assert "Asked about a wedding cake." in listed and who.masked in listed
    assert await page.locator("#history li").count() == 2
    await page.goto(f"{dashboard.url}/dashboard/history?period=all&urgent=true")
    assert await page.locator("#history li").count() == 1
    await dashboard.shot("history")
    await page.locator("#history a", has_text="Open call").click()
    transcript = page.locator("#transcript")
    assert XSS in await transcript.inner_text()
    assert await transcript.locator("img").count() == 0
    assert "call back" in await page.locator("#analysis").inner_text()
    # Another caller's key does not open it.
    other = dashboard.caller("+1 415 555 0152")
    response = await page.goto(f"{dashboard.url}/dashboard/calls/{other.key}/c-last-spring")
    assert response is not None and response.status == 404


def test_the_dashboard_refuses_to_listen_beyond_loopback_without_a_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.delenv("RAPPORT_DASHBOARD_PASSWORD", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env
    assert cli_main(["dashboard", "--host", "0.0.0.0"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "RAPPORT_DASHBOARD_PASSWORD" in error


async def test_a_caller_who_rang_twice_is_one_card_and_done_takes_both(
    dashboard: Dashboard,
) -> None:
    ana = dashboard.caller("+1 415 555 0151")
    t = now()
    await dashboard.call(ana, "c-first", urgency=3, action="call_back", at=t - 3600)
    await dashboard.call(
        ana, "c-again", urgency=5, action="call_back", at=t - 60, summary="Called again, upset."
    )
    await dashboard.call(
        dashboard.caller("+1 415 555 0152"), "c-other", urgency=4, action="send_quote", at=t
    )
    await dashboard.log_in()
    page = dashboard.page
    cards = page.locator("#followups > li")
    assert await cards.evaluate_all("items => items.map(item => item.dataset.call)") == [
        "c-again",
        "c-other",
    ]
    card = page.locator("li[data-call=c-again]")
    assert "2 calls" in await card.inner_text()
    assert "Asked for a quote." in await card.locator(".also li[data-call=c-first]").inner_text()
    await card.locator("button", has_text="Mark done").click()
    assert await cards.evaluate_all("items => items.map(item => item.dataset.call)") == ["c-other"]
    store = dashboard.memory.store
    assert await store.followups.done(ana, "c-again") is not None
    assert await store.followups.done(ana, "c-first") is not None
    entries = await dashboard.memory.audit.recent(AGENT)
    assert sorted(entry.call_id or "" for entry in entries) == ["c-again", "c-first"]


async def test_a_failed_analysis_shows_the_first_words_and_retries(dashboard: Dashboard) -> None:
    who = dashboard.caller("+1 415 555 0153")
    store, queue = dashboard.memory.store, dashboard.memory.queue
    at = now() - 120
    said = "Hi, my order 1142 never arrived and I need it for a party tomorrow night please"
    turns = [
        Turn(role="user", text=said, at=at - 30, call_id="c-failed"),
        Turn(role="assistant", text="Sorry to hear that.", at=at - 20, call_id="c-failed"),
    ]
    await store.append_turns(who, turns)
    ended = {"started_at": at - 60, "ended_at": at, "masked_number": who.masked}
    record = CallRecord(call_id="c-failed", agent_id=AGENT, **ended)
    assert await store.close_call(who, record)
    await queue.enqueue(who, "c-failed")
    (job,) = await queue.read("worker-1", block=0.1)
    await queue.dead_letter(job, "the analysis answer was invalid 3 times")
    assert await store.mark_failed(who, "c-failed", "the analysis answer was invalid 3 times")
    await dashboard.log_in()
    page = dashboard.page
    card = page.locator("li[data-call=c-failed]")
    text = await card.inner_text()
    assert "analysis failed" in text and "my order 1142 never arrived" in text
    assert "Sorry to hear that" not in text  # the caller's words only
    await dashboard.shot("failed")
    await card.locator("button", has_text="Retry").click()
    assert page.url.endswith("/dashboard")
    counts = await queue.counts()
    assert (counts.dead, counts.waiting) == (0, 1)
    (entry,) = await dashboard.memory.audit.recent(AGENT)
    assert entry.action.value == "dead_letter_retried" and entry.call_id == "c-failed"


async def test_times_are_the_business_s_and_say_so(dashboard: Dashboard) -> None:
    who = dashboard.caller("+1 415 555 0154")
    at = (datetime.now(UTC) - timedelta(days=1)).replace(hour=16, minute=30)
    await dashboard.call(who, "c-zone", urgency=3, action="call_back", at=at.timestamp())
    await dashboard.log_in()
    page = dashboard.page
    shown = await page.locator("li[data-call=c-zone] time").first.inner_text()
    in_madrid = at.astimezone(ZONE)
    assert in_madrid.hour != at.hour  # Madrid is one or two hours ahead of UTC
    assert shown == f"{in_madrid:%a %d %b}, {in_madrid:%H}:30"
    assert "Europe/Madrid" in await page.locator("footer").inner_text()


async def test_head_answers_like_get_and_there_is_a_favicon(dashboard: Dashboard) -> None:
    await dashboard.log_in()
    request = dashboard.page.request
    for path in ("/dashboard", "/dashboard/callers", "/dashboard/queue", "/dashboard/login"):
        got = await request.get(f"{dashboard.url}{path}")
        head = await request.head(f"{dashboard.url}{path}")
        assert (head.status, got.status) == (200, 200), path
        assert head.headers["content-type"] == got.headers["content-type"]
        assert await head.body() == b""
    await dashboard.page.goto(f"{dashboard.url}/dashboard")
    icon = await dashboard.page.locator("link[rel=icon]").get_attribute("href")
    assert icon is not None
    favicon = await request.get(f"{dashboard.url}{icon}")
    assert favicon.status == 200 and favicon.headers["content-type"] == "image/svg+xml"


def test_the_demo_refuses_an_external_redis(tmp_path: Path) -> None:
    done = run_demo(tmp_path, subprocess=False, REDIS_URL="redis://127.0.0.1:1")
    assert done.code == 2
    assert done.stderr.strip().count("\n") == 0 and "REDIS_URL" in done.stderr


async def test_the_demo_week_fills_the_dashboard_with_no_key(
    tmp_path: Path, browser: Browser
) -> None:
    done = run_demo(tmp_path, "--fields")
    assert done.code == 0, done.stderr
    assert "python runner.py dashboard --agent demo" in done.stdout
    assert "Traceback" not in done.stderr
    assert not [c.number for c in DEMO_CALLERS if c.number[-4:] in done.stdout + done.stderr]
    again = run_demo(tmp_path, subprocess=False)  # the same folder: refused, nothing mixed in
    assert again.code == 2 and "already holds calls" in again.stderr
    settings = MemorySettings(
        RAPPORT_DATA_DIR=tmp_path / "data", RAPPORT_PEPPER_FILE=tmp_path / "pepper"
    )
    async with memory_runtime(settings) as runtime:
        queue = AnalysisQueue(runtime.redis, prefix=settings.key_prefix)
        memory = dashboard_memory(runtime, queue, agent_id="demo")
        async with browsing(
            memory, DashboardAccess(password=None, key=secrets.token_bytes(32)), browser
        ) as (
            url,
            page,
        ):
            await page.goto(f"{url}/dashboard")
            assert await page.locator("#followups > li").count() >= 5
            assert "calls" in await page.locator("#followups .badge.calls").first.inner_text()
            await page.screenshot(path=str(tmp_path / "followups.png"), full_page=True)
            await page.goto(f"{url}/dashboard/queue")
            assert "record_call_analysis" in await page.locator("#dead").inner_text()
            ana = memory.identify(ANA.number)
            assert ana is not None
            await page.goto(f"{url}/dashboard/callers/{ana.key}")
            assert "Eixample" in await page.locator("#superseded").inner_text()
            texts = page.locator("#facts textarea")
            facts = await texts.evaluate_all("fields => fields.map(field => field.value)")
            assert "Caller now prefers the Gràcia clinic" in facts
            emily = memory.identify(EMILY.number)
            assert emily is not None
            await page.goto(f"{url}/dashboard/calls/{emily.key}/demo-03")  # the week's 3rd call
            assert "lost crown" in await page.locator("#transfer").inner_text()
            assert "emergency" in await page.locator("#fields").inner_text()


def run_demo(folder: Path, *options: str, subprocess: bool = True, **env: str) -> Exited:
    """``python runner.py demo`` into ``folder/data``, with no key and no ``.env`` (a refusal
    without ``subprocess``: the same entry in the test process, seconds faster)."""
    command = ("demo", "--data", str(folder / "data"), *options)
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(folder),
        "RAPPORT_PEPPER_FILE": str(folder / "pepper"),
        **env,
    }
    if subprocess:
        return in_subprocess(folder, command, environment, within=300)  # a week of calls
    return in_this_process(folder, command, environment)
