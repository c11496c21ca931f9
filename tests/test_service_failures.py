"""A call whose speech service or LLM fails is handed on at once, recorded, and counted.

Deepgram is the local fake of its streaming endpoint (``tests/fakes/deepgram_server.py``)
reached through Pipecat's real ``DeepgramSTTService`` and the Deepgram SDK: it refuses a wrong
key at the handshake with Deepgram's 401, or breaks the stream mid-call. Twilio is the REST
fake the bot's own :class:`TwilioHandoff` updates; Daily is the real ``DailyTransport``, whose
``sip_call_transfer`` alone is recorded (as in ``test_call_control.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from anthropic import AsyncAnthropic
from fastapi import FastAPI
from pipecat.frames.frames import CancelFrame, TranscriptionFrame
from pipecat.services.azure.tts import AzureTTSService
from pipecat.services.deepgram.stt import DeepgramSTTService

from bot.text_line import TextLine
from bot.transfer import DailyHandoff, TwilioHandoff
from bot.wording import SERVICE_DOWN_CALL_BACK, SERVICE_DOWN_PUTTING_THROUGH
from memory.analysis.followups import follow_ups
from memory.health import ServiceHealth
from memory.upstream import UPSTREAM, Service
from tests.fakes.azure_speech import FakeAzureSpeech
from tests.fakes.deepgram_server import FakeDeepgram
from tests.fakes.phone_line import DailyLine
from tests.fakes.twilio_api import FakeTwilioAPI
from tests.support.analysis_answers import answer
from tests.support.call_harness import (
    ANA,
    CALL_SID,
    GREETING,
    OTHER,
    Line,
    RunningCall,
    analyse_queued,
    caller_of,
    runtime_of,
    twilio_handoff,
)
from web.health import health_router

DEEPGRAM_KEY = "dg-test-key"
TARGET = "+34600111222"


@pytest.fixture(autouse=True)
def fresh_upstream() -> None:
    for service in Service:
        UPSTREAM.succeeded(service)


@pytest.fixture
async def deepgram() -> AsyncIterator[FakeDeepgram]:
    async with FakeDeepgram(api_key=DEEPGRAM_KEY) as server:
        yield server


@pytest.fixture
async def azure() -> AsyncIterator[FakeAzureSpeech]:
    async with FakeAzureSpeech(api_key="azure-test-key") as server:
        yield server


def twilio_call(
    line: Line, handoff: TwilioHandoff, **extra: Any
) -> AbstractAsyncContextManager[RunningCall]:
    """Ana's Twilio call, handed on through ``handoff`` (``extra``: services and settings)."""
    return line.call(ANA, CALL_SID, transport=TextLine(), kind="twilio", handoff=handoff, **extra)


def deepgram_stt(server: FakeDeepgram, key: str) -> DeepgramSTTService:
    return DeepgramSTTService(api_key=key, base_url=server.base_url)


async def test_a_twilio_call_whose_stt_refuses_the_key_is_put_through_in_twilio_s_voice(
    line: Line, twilio_api: FakeTwilioAPI, deepgram: FakeDeepgram
) -> None:
    _, handoff = twilio_handoff(twilio_api)
    async with twilio_call(
        line, handoff, stt=deepgram_stt(deepgram, "wrong-key"), RAPPORT_TRANSFER_TO=TARGET
    ) as call:
        await call.finished()

    assert deepgram.refused == 1
    (update,) = twilio_api.updates
    assert update.call_sid == CALL_SID
    assert update.form == {
        "Twiml": f'<Response><Say language="en-US">{SERVICE_DOWN_PUTTING_THROUGH["en"]}</Say>'
        f"<Dial><Number>{TARGET}</Number></Dial></Response>"
    }
    record = await runtime_of(line).store.get_call(caller_of(line, ANA), CALL_SID)
    assert record is not None
    assert record.ended_reason == "failed: stt unavailable"
    assert UPSTREAM.refused() == {"stt": "refused the key: check DEEPGRAM_API_KEY"}


async def test_a_twilio_call_whose_stt_dies_mid_call_apologises_hangs_up_and_tops_follow_ups(
    line: Line, twilio_api: FakeTwilioAPI, deepgram: FakeDeepgram
) -> None:
    # An earlier call of another caller, analysed as urgent: the failed call still comes first.
    async with line.call(OTHER, "call-urgent") as earlier:
        await earlier.end()
    await analyse_queued(line, line.fake, answer(urgency=5, action="call_back"))

    serializer, handoff = twilio_handoff(twilio_api)
    async with twilio_call(line, handoff, stt=deepgram_stt(deepgram, DEEPGRAM_KEY)) as call:
        await asyncio.wait_for(deepgram.connected.wait(), 10)
        assert await call.call.worker.flush_pipeline()  # the greeting is spoken and recorded
        await deepgram.drop()
        await call.finished()

    (update,) = twilio_api.updates
    apology = SERVICE_DOWN_CALL_BACK["en"].format(business="Bella's Bakery")
    assert update.form == {
        "Twiml": f'<Response><Say language="en-US">{apology}</Say><Hangup/></Response>'
    }
    assert await serializer.serialize(CancelFrame()) is None  # Twilio hangs up after the <Say>
    record = await runtime_of(line).store.get_call(caller_of(line, ANA), CALL_SID)
    assert record is not None
    assert record.ended_reason == "failed: stt unavailable"
    assert [t.text for t in record.transcript if t.role == "assistant"] == [GREETING]
    listed = await follow_ups(runtime_of(line).store, "bakery", since=0)
    assert [r.call_id for r in listed] == [CALL_SID, "call-urgent"]
    assert UPSTREAM.refused() == {}  # a lost connection is no refused key


async def test_a_call_whose_tts_refuses_the_key_is_handed_on_in_the_caller_s_language(
    line: Line, twilio_api: FakeTwilioAPI, azure: FakeAzureSpeech
) -> None:
    _, handoff = twilio_handoff(twilio_api)
    tts = AzureTTSService(
        api_key="wrong-key",
        private_endpoint=azure.endpoint,
        settings=AzureTTSService.Settings(voice="es-ES-ElviraNeural", language="es-ES"),
    )
    async with twilio_call(
        line, handoff, tts=tts, RAPPORT_DEFAULT_LANGUAGE="es", RAPPORT_TRANSFER_TO=TARGET
    ) as call:
        await call.finished()

    assert azure.refused >= 1
    (update,) = twilio_api.updates
    assert update.form["Twiml"].startswith(
        f'<Response><Say language="es-ES">{SERVICE_DOWN_PUTTING_THROUGH["es"]}</Say><Dial>'
    )
    record = await runtime_of(line).store.get_call(caller_of(line, ANA), CALL_SID)
    assert record is not None and record.ended_reason == "failed: tts unavailable"
    assert UPSTREAM.refused() == {
        "tts": "refused the key: check AZURE_SPEECH_KEY and AZURE_SPEECH_REGION"
    }


@pytest.mark.parametrize("target", [TARGET, None], ids=["target", "no target"])
async def test_a_daily_call_whose_stt_fails_is_transferred_over_sip_or_ended(
    line: Line, deepgram: FakeDeepgram, target: str | None
) -> None:
    daily = DailyLine()
    transfers: list[dict[str, Any]] = []

    async def sip_call_transfer(settings: dict[str, Any]) -> None:
        transfers.append(dict(settings))

    daily._client.sip_call_transfer = sip_call_transfer  # type: ignore[method-assign]
    extra = {"RAPPORT_TRANSFER_TO": target} if target else {}
    async with line.call(
        ANA,
        "call-daily-deaf",
        transport=daily,
        kind="daily",
        handoff=DailyHandoff(daily),
        stt=deepgram_stt(deepgram, "wrong-key"),
        **extra,
    ) as call:
        await call.finished()

    assert transfers == ([{"toEndPoint": TARGET}] if target else [])
    record = await runtime_of(line).store.get_call(caller_of(line, ANA), "call-daily-deaf")
    assert record is not None and record.ended_reason == "failed: stt unavailable"


async def test_a_refused_key_makes_health_503_naming_it_until_the_service_answers_again(
    line: Line, deepgram: FakeDeepgram
) -> None:
    healthy = ServiceHealth(healthy=True, failing=[], redis="up")
    async with line.call(ANA, "call-refused", stt=deepgram_stt(deepgram, "wrong-key")) as call:
        await call.finished()

    app = FastAPI()
    app.include_router(health_router(check=lambda: _answer(healthy)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://rapport"
    ) as http:
        refused = await http.get("/health")
        assert refused.status_code == 503
        assert refused.json()["failing"] == ["stt"]
        assert refused.json()["services"] == {"stt": "refused the key: check DEEPGRAM_API_KEY"}
        metrics = (await http.get("/metrics")).text
        assert 'rapport_service_errors_total{kind="auth",service="stt"}' in metrics

        UPSTREAM.succeeded(Service.STT)  # what the next transcript's TTFB reports
        assert (await http.get("/health")).status_code == 200


async def _answer(health: ServiceHealth) -> ServiceHealth:
    return health


async def test_a_call_whose_llm_refuses_the_key_is_put_through_after_the_caller_speaks(
    line: Line, twilio_api: FakeTwilioAPI
) -> None:
    _, handoff = twilio_handoff(twilio_api)
    async with AsyncAnthropic(api_key="a-stale-key", base_url=line.fake.base_url) as stale:
        stale_line = Line(line.fake, stale, line.memory)
        async with twilio_call(stale_line, handoff, RAPPORT_TRANSFER_TO=TARGET) as call:
            said = TranscriptionFrame("Are you open today?", "caller", "2026-03-02T10:00:00Z")
            await call.call.worker.queue_frame(said)
            await call.finished()

    (update,) = twilio_api.updates
    assert update.form["Twiml"].startswith(
        f'<Response><Say language="en-US">{SERVICE_DOWN_PUTTING_THROUGH["en"]}</Say><Dial>'
    )
    record = await runtime_of(line).store.get_call(caller_of(line, ANA), CALL_SID)
    assert record is not None and record.ended_reason == "failed: llm unavailable"
    assert UPSTREAM.refused() == {"llm": "refused the key: check ANTHROPIC_API_KEY"}
