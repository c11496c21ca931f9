"""The ``/v1`` HTTP API for webhook platforms, through HTTP only: two calls of one caller.

Served by uvicorn on a loopback port with the real memory, recorder, queue and worker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from anthropic import AsyncAnthropic

from bot.wording import GREETINGS
from memory.metrics import REGISTRY
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.text_bot import bot_env
from tests.fakes.text_bot import serving as serving_bot
from tests.support.analysis_answers import answer
from tests.support.call_harness import (
    ANA,
    OTHER,
    Line,
    analyse_queued,
    analysed_in_history,
    caller_of,
    queued_calls,
    runtime_of,
)
from tests.support.platform_server import API_KEY, platform_app, serving

ATTESTED = "TN-Validation-Passed-A"
GREETING = GREETINGS["en"].format(business="Bella's Bakery")


@pytest.fixture
async def api(line: Line, client: AsyncAnthropic) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of a server taking the bakery line's platform calls, with the key."""
    settings = line.settings(RAPPORT_API_KEY=API_KEY)
    app = platform_app(settings, memory=line.memory, client=client)
    async with serving(app) as url:
        headers = {"authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=url, headers=headers) as http:
            yield http


async def test_two_calls_of_one_caller_through_the_http_api(
    line: Line, api: httpx.AsyncClient
) -> None:
    start = {"caller_number": ANA, "agent": "bakery", "attestation": ATTESTED}
    counted = {"transport": "api", "trust": "verified", "outcome": "ended"}
    calls_before = REGISTRY.get_sample_value("rapport_calls_total", counted) or 0.0
    first = (await api.post("/v1/calls", json={**start, "platform_call_id": "vb-1"})).json()
    assert first["call_id"] == "vb-1"
    assert (first["trust"], first["remembered"], first["returning"]) == ("verified", True, False)
    assert first["memory"] == "" and first["opening_line"] == GREETING
    assert "{{" not in first["system_prompt"]
    retried = (await api.post("/v1/calls", json={**start, "platform_call_id": "vb-1"})).json()
    assert retried == first

    turns = [
        {"role": "assistant", "text": first["opening_line"]},
        {
            "role": "user",
            "text": "Hi, I'm Ana. A cake for Friday, please. Card 4111 1111 1111 1111.",
        },
        {"role": "assistant", "text": "Of course, Ana."},
    ]
    recorded = await api.post("/v1/calls/vb-1/turns", json={"turns": turns})
    assert recorded.json() == {"recorded": 3}
    ended = await api.post("/v1/calls/vb-1/end", json={"reason": "caller hung up"})
    assert ended.json() == {"call_id": "vb-1", "recorded": True}
    assert (await api.post("/v1/calls/vb-1/end", json={})).status_code == 200  # a retry
    assert REGISTRY.get_sample_value("rapport_calls_total", counted) == calls_before + 1
    assert (await api.post("/v1/calls/vb-1/turns", json={"turns": turns})).status_code == 409
    assert await queued_calls(line) == ["vb-1"]
    ana = caller_of(line, ANA)
    record = await runtime_of(line).store.get_call(ana, "vb-1")
    assert record is not None and record.ended_reason == "caller hung up"
    assert record.transcript[0].text == GREETING
    assert "4111" not in record.transcript[1].text  # scrubbed as the bot's recorder does

    opening = "Hello Ana, is Friday's cake still on?"
    await analyse_queued(
        line,
        line.fake,
        answer(
            caller_name="Ana",
            summary="Ana ordered a cake for Friday.",
            opening_line=opening,
            facts=[{"text": "Caller orders cakes for Fridays", "confidence": 0.9}],
        ),
    )
    kept = await analysed_in_history(line, "vb-1")  # the /v1 door reaches the history
    assert kept.ended_reason == "caller hung up" and kept.trust == "verified"
    assert "4111" not in kept.transcript[1].text

    second = (await api.post("/v1/calls", json={**start, "platform_call_id": "vb-2"})).json()
    assert (second["returning"], second["opening_line"]) == (True, opening)
    assert "Caller orders cakes for Fridays" in second["memory"]
    assert second["memory"] in second["system_prompt"]
    assert second["memory"].count("<caller_memory>") == 1

    # Another agent, another number: nothing of Ana's.
    for other in ({**start, "agent": "florist"}, {**start, "caller_number": OTHER}):
        fresh = (await api.post("/v1/calls", json=other)).json()
        assert fresh["memory"] == "" and fresh["returning"] is False


async def test_unverified_and_anonymous_callers_are_not_remembered(
    line: Line, api: httpx.AsyncClient
) -> None:
    claimed = (await api.post("/v1/calls", json={"caller_number": ANA})).json()
    assert (claimed["trust"], claimed["remembered"]) == ("unverified", False)
    withheld = (await api.post("/v1/calls", json={"caller_number": "anonymous"})).json()
    assert (withheld["trust"], withheld["remembered"]) == ("anonymous", False)
    for call in (claimed, withheld):
        turns = {"turns": [{"role": "user", "text": "Hello"}]}
        assert (await api.post(f"/v1/calls/{call['call_id']}/turns", json=turns)).json() == {
            "recorded": 0
        }
        await api.post(f"/v1/calls/{call['call_id']}/end")
    assert await queued_calls(line) == []
    assert await runtime_of(line).store.get_call(caller_of(line, ANA), claimed["call_id"]) is None


async def test_the_api_needs_its_key_and_is_documented(api: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=str(api.base_url)) as anonymous:
        assert (await anonymous.post("/v1/calls", json={})).status_code == 401
        wrong = {"authorization": "Bearer nope"}
        assert (await anonymous.post("/v1/calls", json={}, headers=wrong)).status_code == 401
        assert (await anonymous.get("/docs")).status_code == 200
        schema = (await anonymous.get("/openapi.json")).json()
    assert {"/v1/calls", "/v1/calls/{call_id}/turns", "/v1/calls/{call_id}/end"} <= set(
        schema["paths"]
    )
    assert (await api.post("/v1/calls/nope/end")).status_code == 404


def test_without_their_secrets_no_platform_endpoint_is_served(line: Line) -> None:
    app = platform_app(line.settings(), memory=line.memory, client=None)  # type: ignore[arg-type]
    paths = {getattr(route, "path", "") for route in app.routes}
    assert not any(path.startswith(("/vapi", "/v1")) for path in paths)


@pytest.mark.slow
async def test_the_bot_server_serves_the_platform_endpoints_behind_their_secrets(
    tmp_path: Path, redis_url: str, key_prefix: str, fake: FakeAnthropic
) -> None:
    env = bot_env(
        redis_url,
        key_prefix,
        fake.base_url,
        RAPPORT_API_KEY="platform-key",
        RAPPORT_VAPI_SECRET="vapi-secret",
    )
    async with (
        serving_bot(env=env, folder=tmp_path) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        assert (await http.post("/v1/calls", json={})).status_code == 401
        assert (await http.post("/vapi/chat/completions", json={})).status_code == 401
        schema = (await http.get("/openapi.json")).json()
    assert {"/v1/calls", "/vapi/chat/completions", "/vapi/events"} <= set(schema["paths"])
