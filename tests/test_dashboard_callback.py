"""Calling back from the dashboard, in the real browser: the number used, shown once, audited.

The dashboard is ``tests/test_dashboard.py``'s (headless Chromium, phone-sized), here with
calling back set up against the local fake of Twilio's REST API, reached through the real SDK.
Like there, the module's tests share one event loop (and the browser in it): the fake of Twilio
runs in that loop too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from xml.etree import ElementTree

import phonenumbers
import pytest
import pytest_asyncio

from bot.settings import BotSettings
from memory.models import now
from memory.privacy.identity import CallerIdentity
from tests.fakes.twilio_api import FakeTwilioAPI
from tests.test_callback import ACCOUNT_SID, AUTH_TOKEN, BUSINESS, STAFF, business_twilio
from tests.test_dashboard import Dashboard, browser, chromium, dashboard

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

ANA = "+1 415 555 0147"
ANA_E164 = "+14155550147"
__all__ = ["browser", "chromium", "dashboard"]  # the fixtures this module's tests use


@pytest_asyncio.fixture(loop_scope="module")
async def twilio() -> AsyncIterator[FakeTwilioAPI]:
    """Twilio's REST API (the business's account), in the loop the dashboard runs in."""
    async with business_twilio() as server:
        yield server


@pytest.fixture
def callback_settings(twilio: FakeTwilioAPI) -> BotSettings:
    return BotSettings(
        RAPPORT_BUSINESS_NAME="Acme Plumbing",
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_API_BASE_URL=twilio.base_url,
        RAPPORT_CALLBACK_FROM=BUSINESS,
    )


def raw_forms() -> list[str]:
    """The caller's number as a page could spell it out."""
    national = str(phonenumbers.parse(ANA_E164).national_number)
    return [ANA_E164, national, "555-0147", "555 0147"]


async def ana_called(dashboard: Dashboard) -> CallerIdentity:
    """Ana's call, analysed as a call back, with her number kept as a call keeps it."""
    ana = dashboard.caller(ANA)
    await dashboard.call(
        ana, "c-pipe", urgency=5, action="call_back", at=now() - 60, summary="Burst pipe."
    )
    await dashboard.memory.store.set_name(ana, "Ana")
    sealed = dashboard.runtime.sealed_number(ANA, ana)
    assert sealed is not None
    await dashboard.memory.store.keep_number(ana, sealed)
    return ana


async def test_call_back_rings_the_staff_phone_and_show_number_shows_it_once(
    dashboard: Dashboard, twilio: FakeTwilioAPI
) -> None:
    ana = await ana_called(dashboard)
    await dashboard.log_in()
    page = dashboard.page
    await page.locator("li[data-call=c-pipe] a", has_text="Call back").click()
    assert page.url.endswith(f"/dashboard/callback/{ana.key}/c-pipe")
    assert ana.masked in await page.locator("h1").inner_text()

    # No phone of her own yet: asked for it, nothing placed.
    await page.click("#call-back")
    assert "Enter your own phone first" in await page.get_by_role("alert").inner_text()
    assert twilio.created == []
    await page.fill("input[name=phone]", STAFF)
    await page.locator("form", has=page.locator("input[name=phone]")).locator("button").click()
    assert "Your phone is saved." in await page.get_by_role("status").inner_text()
    assert "+34•••33" in await page.content()

    await page.click("#call-back")
    assert "Twilio is ringing your phone" in await page.get_by_role("status").inner_text()
    (created,) = twilio.created
    assert created.form["To"] == "+34600111333" and created.form["From"] == BUSINESS
    dial = ElementTree.fromstring(created.form["Twiml"]).find("Dial")
    assert dial is not None and dial.findtext("Number") == ANA_E164
    content = await page.content()
    assert not [form for form in raw_forms() if form in content]  # used, never shown
    await dashboard.shot("callback")

    await page.click("#show-number")
    assert await page.locator("#number").inner_text() == ANA_E164
    await page.goto(page.url)  # one view: the page itself never holds it
    assert await page.locator("#number").count() == 0

    await page.goto(f"{dashboard.url}/dashboard/audit")
    entries = await page.locator("#audit li").all_inner_texts()
    assert "number shown" in entries[0] and "called back" in entries[1]
    assert all("Marta" in entry and ana.masked in entry for entry in entries[:2])
    assert not [form for entry in entries for form in raw_forms() if form in entry]


async def test_have_rapport_call_back_queues_it_with_the_reason_as_its_opening(
    dashboard: Dashboard, twilio: FakeTwilioAPI
) -> None:
    ana = await ana_called(dashboard)
    await dashboard.log_in()
    page = dashboard.page
    await page.goto(f"{dashboard.url}/dashboard/callback/{ana.key}/c-pipe")
    await page.fill("input[name=reason]", "the burst pipe")
    await page.click("#agent-call-back")
    assert "Rapport will call the caller back" in await page.get_by_role("status").inner_text()
    shown = await page.locator("#agent-callback").inner_text()
    assert "queued" in shown
    assert "Hi Ana, this is Acme Plumbing calling back about the burst pipe." in shown
    assert twilio.created == []  # the bot places it (see tests/test_twilio.py)
    await page.goto(f"{dashboard.url}/dashboard/audit")
    entry = await page.locator("#audit li").first.inner_text()
    assert "agent callback requested" in entry and ana.masked in entry and "Marta" in entry


async def test_every_call_back_action_needs_the_login_and_the_csrf_token(
    dashboard: Dashboard, twilio: FakeTwilioAPI
) -> None:
    ana = await ana_called(dashboard)
    page = dashboard.page
    base = f"{dashboard.url}/dashboard/callback/{ana.key}/c-pipe"
    await page.goto(base)
    assert page.url.endswith("/dashboard/login")
    await dashboard.log_in()
    for action in ("bridge", "number", "agent", "phone"):
        response = await page.request.post(f"{base}/{action}", form={"phone": STAFF})
        assert response.status == 403, action
        assert ANA_E164 not in await response.text()
    await page.context.clear_cookies()
    response = await page.request.post(f"{base}/number", form={}, max_redirects=0)
    assert response.status == 303 and response.headers["location"].endswith("/login")
    assert twilio.created == []
    entries = await dashboard.memory.audit.recent(dashboard.memory.agent_id)
    assert entries == []
