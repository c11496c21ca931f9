"""Twilio, through the real server: our TwiML, then a Media Streams call to the runner's ``/ws``.

The bot runs as ``python tests/fakes/text_bot.py -t twilio`` (``runner.py``'s serving path with
text in place of audio) in a subprocess, configured by environment like production: Redis from
the test fixture, the Anthropic API at a local fake, Twilio's REST API at a local fake. The test
speaks Twilio's side of the protocol: the voice webhook form, then a WebSocket with
``connected``, ``start`` (with the TwiML's ``customParameters``), ``media`` (µ-law, 8 kHz,
base64) and ``stop``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from xml.etree import ElementTree

import aiohttp
import pytest
import websockets
from redis.asyncio import Redis

from memory.identity import CallerIdentity, identify
from memory.models import CallRecord, Fact
from memory.queue import AnalysisQueue
from memory.store import MemoryStore
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.text_bot import serving
from tests.fakes.twilio_api import FakeTwilioAPI
from tests.polling import eventually
from tests.shared import PEPPER

#: Runs subprocesses (see pyproject.toml).
pytestmark = pytest.mark.slow

AGENT = "bakery"
CALLER = "+14155550123"
DIALLED = "+34600111222"
ACCOUNT_SID, AUTH_TOKEN = "AC0123456789abcdef0123456789abcdef", "test-auth-token"
CALL_SID, STREAM_SID = "CA0123456789abcdef0123456789abcdef", "MZ0123456789abcdef0123456789abcdef"
# 20 ms of µ-law silence at 8 kHz, as Twilio sends it.
SILENCE = base64.b64encode(b"\xff" * 160).decode()


@pytest.fixture
async def twilio_api() -> AsyncIterator[FakeTwilioAPI]:
    async with FakeTwilioAPI() as server:
        yield server


@pytest.fixture
async def ana(redis_client: Redis, key_prefix: str) -> CallerIdentity:
    """A caller who called before: name, a fact, one closed call."""
    caller = identify(CALLER, agent_id=AGENT, pepper=PEPPER.encode())
    assert caller is not None
    store = MemoryStore(redis_client, prefix=key_prefix)
    await store.set_name(caller, "Ana Puig")
    await store.upsert_facts(caller, [Fact(text="Caller is vegetarian", confidence=0.9)])
    await store.close_call(caller, CallRecord(call_id="CA-earlier", agent_id=AGENT))
    return caller


@pytest.fixture
async def server(
    tmp_path: Path,
    redis_url: str,
    key_prefix: str,
    fake: FakeAnthropic,
    twilio_api: FakeTwilioAPI,
) -> AsyncIterator[str]:
    """The bot serving Twilio on a loopback port; yields its base URL."""
    env = {
        "REDIS_URL": redis_url,
        "RAPPORT_PEPPER": PEPPER,
        "RAPPORT_KEY_PREFIX": key_prefix,
        "RAPPORT_AGENT_ID": AGENT,
        "RAPPORT_RUN_WORKER": "false",
        # The bot ends the call itself after 2 s of silence: the REST hang-up path.
        "RAPPORT_IDLE_TIMEOUT_S": "2",
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": fake.base_url,
        "DEEPGRAM_API_KEY": "unused",
        "AZURE_SPEECH_KEY": "unused",
        "AZURE_SPEECH_REGION": "unused",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE_URL": twilio_api.base_url,
    }
    options = ("-t", "twilio", "-x", "voice.example.test")
    secrets = (CALLER, CALLER[2:])
    async with serving(*options, env=env, folder=tmp_path, secrets=secrets) as url:
        yield url


async def test_twiml_passes_the_numbers_to_the_stream(server: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server}/", data={"From": CALLER, "To": DIALLED, "CallSid": CALL_SID}
        ) as response,
    ):
        assert response.status == 200
        assert response.content_type == "application/xml"
        stream = ElementTree.fromstring(await response.text()).find("./Connect/Stream")
    assert stream is not None
    assert stream.get("url") == "wss://voice.example.test/ws"
    parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert parameters == {"from_number": CALLER, "to_number": DIALLED}


# The returning caller's greeting runs the LLM on `messages: []` (issue 8).
async def test_a_media_stream_call_loads_the_callers_memory_and_hangs_up(
    server: str,
    fake: FakeAnthropic,
    twilio_api: FakeTwilioAPI,
    ana: CallerIdentity,
    redis_client: Redis,
    key_prefix: str,
) -> None:
    ws_url = server.replace("http://", "ws://") + "/ws"
    spoken = await _call(ws_url, until=twilio_api.updated)
    assert spoken, "the caller heard nothing"

    # A returning caller is greeted by name at once: no LLM request before they speak.
    assert fake.requests == []

    # The bot hung up through Twilio's REST API, and queued the call for analysis.
    (update,) = twilio_api.updates
    assert (update.account_sid, update.call_sid) == (ACCOUNT_SID, CALL_SID)
    assert update.form == {"Status": "completed"}
    assert update.basic_auth == (ACCOUNT_SID, AUTH_TOKEN)
    queue = AnalysisQueue(redis_client, prefix=key_prefix)

    async def queued() -> list[str]:
        return [
            fields[b"call"].decode() for _, fields in await redis_client.xrange(queue.stream_key)
        ]

    await eventually(queued)
    assert await queued() == [CALL_SID]
    record = await MemoryStore(redis_client, prefix=key_prefix).get_call(ana, CALL_SID)
    assert record is not None
    ((role, greeting),) = [(t.role, t.text) for t in record.transcript]
    assert role == "assistant" and greeting.startswith("Hello again, Ana Puig,")


async def _call(ws_url: str, *, until: asyncio.Event) -> int:
    """Twilio's side of a call: stream silence until ``until`` (the hang-up) or the bot closes.

    Returns:
        How many ``media`` messages (the bot's audio) came back.
    """
    spoken = 0
    async with websockets.connect(ws_url) as twilio:
        await twilio.send(
            json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        )
        await twilio.send(json.dumps(_start_message()))
        try:
            async with asyncio.timeout(20):
                for chunk in itertools.count():
                    if until.is_set():
                        # What Twilio sends once the call is completed.
                        await twilio.send(json.dumps({"event": "stop", "streamSid": STREAM_SID}))
                        break
                    await twilio.send(_media(chunk))
                    with contextlib.suppress(TimeoutError):
                        reply = json.loads(await asyncio.wait_for(twilio.recv(), 0.02))
                        spoken += reply.get("event") == "media"
        except websockets.ConnectionClosedOK:
            pass  # the bot closed the stream after hanging up
    await asyncio.wait_for(until.wait(), 10)
    return spoken


def _start_message() -> dict[str, object]:
    return {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": STREAM_SID,
        "start": {
            "accountSid": ACCOUNT_SID,
            "streamSid": STREAM_SID,
            "callSid": CALL_SID,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"from_number": CALLER, "to_number": DIALLED},
        },
    }


def _media(chunk: int) -> str:
    return json.dumps(
        {
            "event": "media",
            "streamSid": STREAM_SID,
            "media": {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(20 * chunk),
                "payload": SILENCE,
            },
        }
    )
