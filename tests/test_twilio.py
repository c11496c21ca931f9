"""Twilio, through the real server: the signed webhook, our TwiML, then a Media Streams call.

The bot runs as ``python tests/fakes/text_bot.py -t twilio`` (``runner.py``'s serving path with
text in place of audio) in a subprocess, configured by environment like production: Redis from
the test fixture, the Anthropic API at a local fake, Twilio's REST API at a local fake. The test
speaks Twilio's side of the protocol: the voice webhook form signed with the auth token
(``X-Twilio-Signature``, computed by the ``twilio`` package as Twilio computes it), then a
WebSocket with ``connected``, ``start`` (with the TwiML's ``customParameters``), ``media``
(µ-law, 8 kHz, base64) and ``stop``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from xml.etree import ElementTree

import aiohttp
import pytest
import websockets
from redis.asyncio import Redis
from twilio.request_validator import RequestValidator

from bot.call_control import AGENT_ENDED
from bot.trust import ATTESTED, CALLBACK_ATTESTATION, StreamTokens, stream_token_secret
from bot.wording import IDLE_GOODBYES
from memory.models import CallRecord, CallTrust, Fact
from memory.privacy.identity import CallerIdentity, identify
from memory.privacy.numbers import load_number_vault
from memory.store.callbacks import AgentCallback, AgentCallbacks
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue
from tests.fakes.anthropic_server import FakeAnthropic, Reply
from tests.fakes.text_bot import KEYPAD, SPOKEN_LOG, serving
from tests.fakes.twilio_api import FakeTwilioAPI
from tests.support.polling import eventually
from tests.support.values import PEPPER

#: Runs subprocesses (see pyproject.toml).
pytestmark = pytest.mark.slow

AGENT = "bakery"
CALLER = "+14155550123"
DIALLED = "+34600111222"
ACCOUNT_SID, AUTH_TOKEN = "AC0123456789abcdef0123456789abcdef", "test-auth-token"
CALL_SID, STREAM_SID = "CA0123456789abcdef0123456789abcdef", "MZ0123456789abcdef0123456789abcdef"
PUBLIC_HOST = "voice.example.test"
WEBHOOK_URL = f"https://{PUBLIC_HOST}/"
#: What the caller says (by pressing 1: see ``bot/text_line.py``), and the agent's answer.
BYE = "That's all, thank you. Bye!"
GOODBYE = "Thank you for calling, Ana, and goodbye!"
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
def spoken(tmp_path: Path) -> Path:
    """Where the text bot writes each sentence it speaks."""
    return tmp_path / "spoken.txt"


@pytest.fixture
async def server(
    tmp_path: Path,
    redis_url: str,
    key_prefix: str,
    fake: FakeAnthropic,
    twilio_api: FakeTwilioAPI,
    spoken: Path,
) -> AsyncIterator[str]:
    """The bot serving Twilio on a loopback port (default trust policy); yields its base URL."""
    env = {
        "REDIS_URL": redis_url,
        "RAPPORT_PEPPER": PEPPER,
        "RAPPORT_KEY_PREFIX": key_prefix,
        "RAPPORT_AGENT_ID": AGENT,
        "RAPPORT_RUN_WORKER": "false",
        # The bot says goodbye and ends the call itself after 2 s of silence: the REST hang-up.
        "RAPPORT_IDLE_TIMEOUT_S": "2",
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": fake.base_url,
        "DEEPGRAM_API_KEY": "unused",
        "AZURE_SPEECH_KEY": "unused",
        "AZURE_SPEECH_REGION": "unused",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE_URL": twilio_api.base_url,
        "RAPPORT_CALLBACK_FROM": DIALLED,
        "RAPPORT_NUMBER_KEY_FILE": str(tmp_path / "number_key"),
        SPOKEN_LOG: str(spoken),
        KEYPAD: json.dumps({"1": BYE}),
    }
    options = ("-t", "twilio", "-x", f"https://{PUBLIC_HOST}/")  # any public host form will do
    secrets = (CALLER, CALLER[2:])
    async with serving(*options, env=env, folder=tmp_path, secrets=secrets) as url:
        yield url


def signature(form: dict[str, str], *, url: str = WEBHOOK_URL, token: str = AUTH_TOKEN) -> str:
    """The ``X-Twilio-Signature`` Twilio sends for ``form`` posted to ``url``."""
    return RequestValidator(token).compute_signature(url, form)


def call_form(verstat: str | None = ATTESTED) -> dict[str, str]:
    """Twilio's voice webhook form for the call, with the carrier's verdict."""
    form = {"From": CALLER, "To": DIALLED, "CallSid": CALL_SID, "AccountSid": ACCOUNT_SID}
    return form | ({"StirVerstat": verstat} if verstat else {})


async def post_webhook(
    server: str, form: dict[str, str], headers: dict[str, str], *, path: str = "/"
) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server}{path}", data=form, headers=headers) as response,
    ):
        return response.status, await response.text()


async def stream_parameters(
    server: str, form: dict[str, str], *, url: str = WEBHOOK_URL
) -> dict[str, str]:
    """What Twilio learns from our TwiML for a webhook to ``url``: the stream's parameters."""
    headers = {"X-Twilio-Signature": signature(form, url=url)}
    status, xml = await post_webhook(server, form, headers, path=url.split(PUBLIC_HOST, 1)[1])
    assert status == 200, xml
    stream = ElementTree.fromstring(xml).find("./Connect/Stream")
    assert stream is not None
    assert stream.get("url") == f"wss://{PUBLIC_HOST}/ws"
    return {str(p.get("name")): str(p.get("value")) for p in stream.findall("Parameter")}


async def heard(spoken: Path) -> list[str]:
    """What the caller heard, sentence by sentence."""
    return (await asyncio.to_thread(spoken.read_text)).splitlines()


def ws_url(server: str) -> str:
    return server.replace("http://", "ws://") + "/ws"


@contextlib.asynccontextmanager
async def memory_reads(redis_url: str, key_prefix: str) -> AsyncIterator[list[str]]:
    """Every Redis command touching this test's caller keys while the block runs (MONITOR)."""
    seen: list[str] = []
    client = Redis.from_url(redis_url)
    monitor = client.monitor()
    await monitor.connect()
    await monitor.connection.send_command("MONITOR")
    await monitor.connection.read_response()

    async def watch() -> None:
        while True:
            command = (await monitor.next_command())["command"]
            if f"{key_prefix}:{{{AGENT}:" in command:
                seen.append(command.split()[0])

    watcher = asyncio.create_task(watch())
    try:
        yield seen
        await asyncio.sleep(0.5)  # what the bot may still be doing
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
        await monitor.connection.disconnect()
        await client.aclose()


async def test_a_signed_webhook_gets_twiml_carrying_the_numbers_and_a_call_token(
    server: str,
) -> None:
    parameters = await stream_parameters(server, call_form())
    assert {k: v for k, v in parameters.items() if k != "call_token"} == {
        "from_number": CALLER,
        "to_number": DIALLED,
        "attestation": ATTESTED,
    }
    assert parameters["call_token"].count(".") == 2


@pytest.mark.parametrize("forgery", ["missing", "altered body", "altered url", "wrong token"])
async def test_a_webhook_without_a_valid_signature_gets_403_and_no_twiml(
    server: str, forgery: str
) -> None:
    form = call_form()
    signed = {
        "missing": "",
        "altered body": signature(form | {"From": "+14155550188"}),
        "altered url": signature(form, url=f"https://{PUBLIC_HOST}/other"),
        "wrong token": signature(form, token="not-the-auth-token"),
    }[forgery]
    headers = {"X-Twilio-Signature": signed} if signed else {}
    assert await post_webhook(server, form, headers) == (403, "")


async def test_an_attested_call_loads_the_callers_memory_and_hangs_up(
    server: str,
    fake: FakeAnthropic,
    twilio_api: FakeTwilioAPI,
    ana: CallerIdentity,
    redis_client: Redis,
    key_prefix: str,
    spoken: Path,
) -> None:
    parameters = await stream_parameters(server, call_form())
    audio = await _call(ws_url(server), parameters, until=twilio_api.updated)
    assert audio, "the caller heard nothing"

    # Greeted by name at once: no LLM request before the caller speaks.
    assert fake.requests == []
    assert (await heard(spoken))[0].startswith("Hello again, Ana Puig,")

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
    # The greeting, then the goodbye of a caller who stayed silent until the idle timeout.
    greeting, goodbye = [(t.role, t.text) for t in record.transcript]
    assert greeting[0] == "assistant" and greeting[1].startswith("Hello again, Ana Puig,")
    assert goodbye == ("assistant", IDLE_GOODBYES["en"])
    assert record.trust == CallTrust.VERIFIED


@pytest.mark.parametrize("token", ["none", "forged", "expired", "another call's", "replayed"])
async def test_a_stream_without_a_valid_call_token_is_closed_before_any_memory_is_read(
    server: str,
    ana: CallerIdentity,
    redis_client: Redis,
    redis_url: str,
    key_prefix: str,
    token: str,
) -> None:
    parameters = await stream_parameters(server, call_form())
    secret = stream_token_secret(AUTH_TOKEN)
    if token == "none":
        del parameters["call_token"]
    elif token == "forged":
        parameters["call_token"] = StreamTokens(b"x" * 32).issue(
            call_sid=CALL_SID, from_number=CALLER, to_number=DIALLED, attestation=ATTESTED
        )
    elif token == "expired":
        parameters["call_token"] = StreamTokens(secret, ttl_s=-1).issue(
            call_sid=CALL_SID, from_number=CALLER, to_number=DIALLED, attestation=ATTESTED
        )
    elif token == "another call's":
        parameters["call_token"] = StreamTokens(secret).issue(
            call_sid="CA-another", from_number=CALLER, to_number=DIALLED, attestation=ATTESTED
        )
    else:  # the real call's token, used by the real stream first
        await _refused(ws_url(server), parameters, hang_up=True)
        queue = AnalysisQueue(redis_client, prefix=key_prefix)
        await eventually(lambda: redis_client.xlen(queue.stream_key))  # that call is over
    async with memory_reads(redis_url, key_prefix) as reads:
        assert await _refused(ws_url(server), parameters) == 1008
    assert reads == []


async def test_a_spoofed_number_hears_a_first_time_greeting_and_nothing_of_the_real_caller(
    server: str,
    fake: FakeAnthropic,
    twilio_api: FakeTwilioAPI,
    ana: CallerIdentity,
    redis_client: Redis,
    redis_url: str,
    key_prefix: str,
    spoken: Path,
) -> None:
    # A validly signed webhook for a number the carrier could not vouch for.
    parameters = await stream_parameters(server, call_form("TN-Validation-Failed"))
    async with memory_reads(redis_url, key_prefix) as reads:
        await _call(ws_url(server), parameters, until=twilio_api.updated)
    assert reads == []  # nothing read, nothing written
    greeting = (await heard(spoken))[0]
    assert greeting.startswith("Hello, you're through to") and "Ana" not in greeting
    assert fake.requests == []
    store = MemoryStore(redis_client, prefix=key_prefix)
    assert await store.get_call(ana, CALL_SID) is None


async def _call(
    ws_url: str,
    parameters: dict[str, str],
    *,
    until: asyncio.Event,
    press: str | None = None,
    heard_at: list[float] | None = None,
) -> int:
    """Twilio's side of a call: stream silence until ``until`` (the hang-up) or the bot closes.

    Args:
        ws_url: The bot's Media Streams WebSocket.
        parameters: The stream's custom parameters, from the TwiML.
        until: Set when the call is hung up.
        press: A key the caller presses half a second in (a ``dtmf`` message).
        heard_at: Collects when each ``media`` message arrived (``time.monotonic``).

    Returns:
        How many ``media`` messages (the bot's audio) came back.
    """
    spoken = 0
    async with websockets.connect(ws_url) as twilio:
        await twilio.send(
            json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        )
        await twilio.send(json.dumps(_start_message(parameters)))
        try:
            async with asyncio.timeout(20):
                for chunk in itertools.count():
                    if until.is_set():
                        # What Twilio sends once the call is completed.
                        await twilio.send(json.dumps({"event": "stop", "streamSid": STREAM_SID}))
                        break
                    await twilio.send(_media(chunk))
                    if press is not None and chunk == 25:
                        dtmf = {"event": "dtmf", "streamSid": STREAM_SID, "dtmf": {"digit": press}}
                        await twilio.send(json.dumps(dtmf))
                    with contextlib.suppress(TimeoutError):
                        reply = json.loads(await asyncio.wait_for(twilio.recv(), 0.02))
                        if reply.get("event") == "media":
                            spoken += 1
                            if heard_at is not None:
                                heard_at.append(time.monotonic())
        except websockets.ConnectionClosedOK:
            pass  # the bot closed the stream after hanging up
    await asyncio.wait_for(until.wait(), 10)
    return spoken


async def test_rapport_calls_a_follow_up_back_and_the_call_opens_with_why(
    server: str,
    twilio_api: FakeTwilioAPI,
    ana: CallerIdentity,
    redis_client: Redis,
    key_prefix: str,
    spoken: Path,
    tmp_path: Path,
) -> None:
    # Ana's number was kept, sealed, by an earlier call; someone asked Rapport to call back.
    vault = load_number_vault(tmp_path / "number_key")  # the bot generated it at start
    store = MemoryStore(redis_client, prefix=key_prefix)
    await store.keep_number(ana, vault.seal(CALLER, bound_to=ana.hash_tag))
    opening = "Hi Ana Puig, this is the bakery calling back about the birthday cake."
    request = AgentCallback(call_id="CA-earlier", requested_by="Marta", due_at=0, opening=opening)
    await AgentCallbacks(redis_client, prefix=key_prefix).save(ana, request)

    # The bot places it from the business's number; Twilio will fetch the TwiML from our URL.
    await eventually(lambda: twilio_api.created)
    (created,) = twilio_api.created
    assert (created.form["To"], created.form["From"]) == (CALLER, DIALLED)
    url = created.form["Url"]
    assert url.startswith(f"https://{PUBLIC_HOST}/callback-answer?") and CALLER[1:] not in url

    # Ana picks up: Twilio's signed request for the outbound call (From: the business).
    form = {"From": DIALLED, "To": CALLER, "CallSid": CALL_SID, "AccountSid": ACCOUNT_SID}
    forged = signature(form, url=url.replace("CA-earlier", "CA-other"))
    path = url.split(PUBLIC_HOST, 1)[1]
    assert await post_webhook(server, form, {"X-Twilio-Signature": forged}, path=path) == (403, "")
    parameters = await stream_parameters(server, form, url=url)
    assert parameters["from_number"] == CALLER and parameters["to_number"] == DIALLED
    assert parameters["attestation"].startswith(CALLBACK_ATTESTATION)
    await _call(ws_url(server), parameters, until=twilio_api.updated)

    # A normal Rapport call, opening with why we call, recorded as Ana's, trusted.
    assert (await heard(spoken))[0] == opening
    await eventually(
        lambda: redis_client.xlen(AnalysisQueue(redis_client, prefix=key_prefix).stream_key)
    )
    record = await store.get_call(ana, CALL_SID)
    assert record is not None and record.trust == CallTrust.VERIFIED
    assert record.transcript[0].text == opening
    # A caller's own webhook cannot claim to be a call back.
    inbound = await stream_parameters(server, call_form(f"{CALLBACK_ATTESTATION}x|y"))
    assert inbound["attestation"] == ""

    # Twilio says how it ended (signed): answered, so the call back stays placed; a status
    # naming another follow-up, or unsigned, is refused.
    status_url = created.form["StatusCallback"]
    status_path = status_url.split(PUBLIC_HOST, 1)[1]
    ended = form | {"CallStatus": "completed"}
    refused = signature(ended, url=status_url.replace("CA-earlier", "CA-other"))
    assert await post_webhook(server, ended, {"X-Twilio-Signature": refused}, path=status_path) == (
        403,
        "",
    )
    headers = {"X-Twilio-Signature": signature(ended, url=status_url)}
    assert (await post_webhook(server, ended, headers, path=status_path))[0] == 204
    kept = await AgentCallbacks(redis_client, prefix=key_prefix).get(ana, "CA-earlier")
    assert kept is not None and kept.status.value == "placed" and kept.call_sid == created.sid


async def test_end_call_speaks_the_goodbye_in_full_before_twilio_is_told_to_hang_up(
    server: str,
    fake: FakeAnthropic,
    twilio_api: FakeTwilioAPI,
    ana: CallerIdentity,
    redis_client: Redis,
    key_prefix: str,
    spoken: Path,
) -> None:
    fake.script(Reply.tool_call("end_call", {"reason": "caller said goodbye"}, text=GOODBYE))
    parameters = await stream_parameters(server, call_form())
    heard_at: list[float] = []
    await _call(ws_url(server), parameters, until=twilio_api.updated, press="1", heard_at=heard_at)

    assert (await heard(spoken))[-1] == GOODBYE
    (update,) = twilio_api.updates
    assert update.form == {"Status": "completed"}
    # The greeting and the goodbye both reached the caller before the hang-up reached Twilio.
    assert len([at for at in heard_at if at < update.at]) >= 2
    assert not [at for at in heard_at if at > update.at]
    store = MemoryStore(redis_client, prefix=key_prefix)
    await eventually(
        lambda: redis_client.xlen(AnalysisQueue(redis_client, prefix=key_prefix).stream_key)
    )
    record = await store.get_call(ana, CALL_SID)
    assert record is not None and record.ended_reason is not None
    assert record.ended_reason.startswith(f"ended: {AGENT_ENDED}")
    assert [t.text for t in record.transcript][-2:] == [BYE, GOODBYE]


async def _refused(ws_url: str, parameters: dict[str, str], *, hang_up: bool = False) -> int:
    """Open a stream with ``parameters``; the close code the bot answered with.

    With ``hang_up``, the stream is accepted and the test hangs up at once (Twilio's ``stop``).
    """
    async with websockets.connect(ws_url) as twilio:
        await twilio.send(
            json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        )
        await twilio.send(json.dumps(_start_message(parameters)))
        if hang_up:
            await twilio.send(json.dumps({"event": "stop", "streamSid": STREAM_SID}))
        with contextlib.suppress(websockets.ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    await twilio.recv()
    return twilio.close_code or 0


def _start_message(parameters: dict[str, str]) -> dict[str, object]:
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
            "customParameters": parameters,
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
