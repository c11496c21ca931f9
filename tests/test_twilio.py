"""Twilio, through the real server: the signed webhook, our TwiML, then a Media Streams call.

The bot runs as ``python tests/fakes/text_bot.py -t twilio`` (``runner.py``'s serving path with
text in place of audio) in a subprocess, configured by environment like production: Redis from
the test fixture, the Anthropic API at a local fake, Twilio's REST API at a local fake. The test
speaks Twilio's side of the protocol: the voice webhook form signed with the auth token
(``X-Twilio-Signature``, computed by the ``twilio`` package as Twilio computes it), then a
WebSocket with ``connected``, ``start`` (with the TwiML's ``customParameters``), ``media``
(µ-law, 8 kHz, base64) and ``stop``.

One bot serves the whole module (it takes seconds to start, and every test wants the same
settings): each test has its own caller number and call SID, and looks only at what happened
since it began (:class:`ThisCall`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
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
from tests.fakes.twilio_api import CallUpdate, CreatedCall, FakeTwilioAPI
from tests.support.background import BackgroundLoop
from tests.support.polling import eventually
from tests.support.values import API_KEY, PEPPER

#: Runs subprocesses (see pyproject.toml).
pytestmark = pytest.mark.slow

AGENT = "bakery"
#: Each test's caller, "+1 415 555 01NN" with NN its own.
CALLERS = (f"+141555501{n:02d}" for n in itertools.count(30))
DIALLED = "+34600111222"
ACCOUNT_SID, AUTH_TOKEN = "AC0123456789abcdef0123456789abcdef", "test-auth-token"
#: Each test's call SID, "CA0123456789abcdef0123456789NNNN" with NNNN its own.
CALL_SIDS = (f"CA0123456789abcdef0123456789{n:04d}" for n in itertools.count())
STREAM_SID = "MZ0123456789abcdef0123456789abcdef"
PUBLIC_HOST = "voice.example.test"
WEBHOOK_URL = f"https://{PUBLIC_HOST}/"
#: What the caller says (by pressing 1: see ``bot/text_line.py``), and the agent's answer.
BYE = "That's all, thank you. Bye!"
GOODBYE = "Thank you for calling, Ana, and goodbye!"
# 20 ms of µ-law silence at 8 kHz, as Twilio sends it.
SILENCE = base64.b64encode(b"\xff" * 160).decode()


@pytest.fixture(scope="module")
def twilio_api(background: BackgroundLoop) -> FakeTwilioAPI:
    """Twilio's REST API of the module's bot."""
    return background.enter(FakeTwilioAPI())


@pytest.fixture(scope="module")
def bot_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bot's working folder: its log, its number key and what it spoke."""
    return tmp_path_factory.mktemp("twilio-bot")


@pytest.fixture(scope="module")
def callers() -> list[str]:
    """Every test's caller number, in each form the bot must never log."""
    return []


@pytest.fixture(scope="module")
def server(
    background: BackgroundLoop,
    bot_folder: Path,
    redis_url: str,
    module_prefix: str,
    module_fake: FakeAnthropic,
    twilio_api: FakeTwilioAPI,
    callers: list[str],
) -> str:
    """The bot serving Twilio on a loopback port (default trust policy); its base URL."""
    env = {
        "REDIS_URL": redis_url,
        "RAPPORT_PEPPER": PEPPER,
        "RAPPORT_KEY_PREFIX": module_prefix,
        "RAPPORT_AGENT_ID": AGENT,
        "RAPPORT_RUN_WORKER": "false",
        # The bot says goodbye and ends the call itself after 2 s of silence: the REST hang-up.
        "RAPPORT_IDLE_TIMEOUT_S": "2",
        "ANTHROPIC_API_KEY": API_KEY,
        "ANTHROPIC_BASE_URL": module_fake.base_url,
        "DEEPGRAM_API_KEY": "unused",
        "AZURE_SPEECH_KEY": "unused",
        "AZURE_SPEECH_REGION": "unused",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_API_BASE_URL": twilio_api.base_url,
        "RAPPORT_CALLBACK_FROM": DIALLED,
        "RAPPORT_NUMBER_KEY_FILE": str(bot_folder / "number_key"),
        SPOKEN_LOG: str(bot_folder / "spoken.txt"),
        KEYPAD: json.dumps({"1": BYE}),
    }
    options = ("-t", "twilio", "-x", f"https://{PUBLIC_HOST}/")  # any public host form will do
    # The log is checked for every test's caller when the module ends.
    return background.enter(serving(*options, env=env, folder=bot_folder, secrets=callers))


@dataclass(frozen=True)
class ThisCall:
    """This test's caller and call SID on the module's bot, and what happened since it began:
    the bot and the fakes are shared, so a test reads only its own part of what they kept."""

    number: str
    sid: str
    redis: Redis
    queue: AnalysisQueue
    spoken: Path
    fake: FakeAnthropic
    twilio_api: FakeTwilioAPI
    #: Where the spoken log, the LLM requests and the analysis queue stood when the test began.
    spoken_before: int
    requests_before: int
    queued_after: str

    async def heard(self) -> list[str]:
        """What callers heard since the test began, sentence by sentence."""
        return (await asyncio.to_thread(_spoken_lines, self.spoken))[self.spoken_before :]

    def llm_requests(self) -> list[object]:
        """The LLM requests the bot sent since the test began."""
        return list(self.fake.requests[self.requests_before :])

    def updates(self) -> list[CallUpdate]:
        """The updates Twilio's REST API received for this call."""
        return [update for update in self.twilio_api.updates if update.call_sid == self.sid]

    def hung_up(self) -> bool:
        """Whether the bot told Twilio to hang this call up (or run new TwiML on it)."""
        return bool(self.updates())

    def placed(self) -> list[CreatedCall]:
        """The calls placed to this test's caller."""
        return [call for call in self.twilio_api.created if call.form["To"] == self.number]

    async def queued(self) -> list[str]:
        """The calls queued for analysis since the test began."""
        entries = await self.redis.xrange(self.queue.stream_key, min=self.queued_after)
        return [
            fields[b"call"].decode()
            for entry, fields in entries
            if entry.decode() != self.queued_after
        ]


def _spoken_lines(spoken: Path) -> list[str]:
    return spoken.read_text().splitlines() if spoken.exists() else []


@pytest.fixture
async def call(
    server: str,
    bot_folder: Path,
    callers: list[str],
    redis_client: Redis,
    module_prefix: str,
    module_fake: FakeAnthropic,
    twilio_api: FakeTwilioAPI,
) -> ThisCall:
    """A caller number and call SID of this test's own, and where the shared records stood."""
    number = next(CALLERS)
    callers.extend((number, number[2:]))
    queue = AnalysisQueue(redis_client, prefix=module_prefix)
    last = await redis_client.xrevrange(queue.stream_key, count=1)
    spoken = bot_folder / "spoken.txt"
    return ThisCall(
        number=number,
        sid=next(CALL_SIDS),
        redis=redis_client,
        queue=queue,
        spoken=spoken,
        fake=module_fake,
        twilio_api=twilio_api,
        spoken_before=len(await asyncio.to_thread(_spoken_lines, spoken)),
        requests_before=len(module_fake.requests),
        queued_after=last[0][0].decode() if last else "0",
    )


@pytest.fixture
async def ana(redis_client: Redis, module_prefix: str, call: ThisCall) -> CallerIdentity:
    """A caller who called before: name, a fact, one closed call."""
    caller = identify(call.number, agent_id=AGENT, pepper=PEPPER.encode())
    assert caller is not None
    store = MemoryStore(redis_client, prefix=module_prefix)
    await store.set_name(caller, "Ana Puig")
    await store.upsert_facts(caller, [Fact(text="Caller is vegetarian", confidence=0.9)])
    await store.close_call(caller, CallRecord(call_id="CA-earlier", agent_id=AGENT))
    return caller


def signature(form: dict[str, str], *, url: str = WEBHOOK_URL, token: str = AUTH_TOKEN) -> str:
    """The ``X-Twilio-Signature`` Twilio sends for ``form`` posted to ``url``."""
    return RequestValidator(token).compute_signature(url, form)


def call_form(call: ThisCall, verstat: str | None = ATTESTED) -> dict[str, str]:
    """Twilio's voice webhook form for the call, with the carrier's verdict."""
    form = {"From": call.number, "To": DIALLED, "CallSid": call.sid, "AccountSid": ACCOUNT_SID}
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
    server: str, call: ThisCall
) -> None:
    parameters = await stream_parameters(server, call_form(call))
    assert {k: v for k, v in parameters.items() if k != "call_token"} == {
        "from_number": call.number,
        "to_number": DIALLED,
        "attestation": ATTESTED,
    }
    assert parameters["call_token"].count(".") == 2


@pytest.mark.parametrize("forgery", ["missing", "altered body", "altered url", "wrong token"])
async def test_a_webhook_without_a_valid_signature_gets_403_and_no_twiml(
    server: str, call: ThisCall, forgery: str
) -> None:
    form = call_form(call)
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
    call: ThisCall,
    ana: CallerIdentity,
    redis_client: Redis,
    module_prefix: str,
) -> None:
    parameters = await stream_parameters(server, call_form(call))
    audio = await _call(ws_url(server), parameters, call)
    assert audio, "the caller heard nothing"

    # Greeted by name at once: no LLM request before the caller speaks.
    assert call.llm_requests() == []
    assert (await call.heard())[0].startswith("Hello again, Ana Puig,")

    # The bot hung up through Twilio's REST API, and queued the call for analysis.
    (update,) = call.updates()
    assert (update.account_sid, update.call_sid) == (ACCOUNT_SID, call.sid)
    assert update.form == {"Status": "completed"}
    assert update.basic_auth == (ACCOUNT_SID, AUTH_TOKEN)
    await eventually(call.queued)
    assert await call.queued() == [call.sid]
    record = await MemoryStore(redis_client, prefix=module_prefix).get_call(ana, call.sid)
    assert record is not None
    # The greeting, then the goodbye of a caller who stayed silent until the idle timeout.
    greeting, goodbye = [(t.role, t.text) for t in record.transcript]
    assert greeting[0] == "assistant" and greeting[1].startswith("Hello again, Ana Puig,")
    assert goodbye == ("assistant", IDLE_GOODBYES["en"])
    assert record.trust == CallTrust.VERIFIED


@pytest.mark.parametrize("token", ["none", "forged", "expired", "another call's", "replayed"])
async def test_a_stream_without_a_valid_call_token_is_closed_before_any_memory_is_read(
    server: str,
    call: ThisCall,
    ana: CallerIdentity,
    redis_url: str,
    module_prefix: str,
    token: str,
) -> None:
    parameters = await stream_parameters(server, call_form(call))
    secret = stream_token_secret(AUTH_TOKEN)
    numbers = {"from_number": call.number, "to_number": DIALLED, "attestation": ATTESTED}
    if token == "none":
        del parameters["call_token"]
    elif token == "forged":
        parameters["call_token"] = StreamTokens(b"x" * 32).issue(call_sid=call.sid, **numbers)
    elif token == "expired":
        parameters["call_token"] = StreamTokens(secret, ttl_s=-1).issue(
            call_sid=call.sid, **numbers
        )
    elif token == "another call's":
        parameters["call_token"] = StreamTokens(secret).issue(call_sid="CA-another", **numbers)
    else:  # the real call's token, used by the real stream first
        await _refused(ws_url(server), parameters, call, hang_up=True)
        await eventually(call.queued)  # that call is over
    async with memory_reads(redis_url, module_prefix) as reads:
        assert await _refused(ws_url(server), parameters, call) == 1008
    assert reads == []


async def test_a_spoofed_number_hears_a_first_time_greeting_and_nothing_of_the_real_caller(
    server: str,
    call: ThisCall,
    ana: CallerIdentity,
    redis_client: Redis,
    redis_url: str,
    module_prefix: str,
) -> None:
    # A validly signed webhook for a number the carrier could not vouch for.
    parameters = await stream_parameters(server, call_form(call, "TN-Validation-Failed"))
    async with memory_reads(redis_url, module_prefix) as reads:
        await _call(ws_url(server), parameters, call)
    assert reads == []  # nothing read, nothing written
    greeting = (await call.heard())[0]
    assert greeting.startswith("Hello, you're through to") and "Ana" not in greeting
    assert call.llm_requests() == []
    store = MemoryStore(redis_client, prefix=module_prefix)
    assert await store.get_call(ana, call.sid) is None


async def _call(
    ws_url: str,
    parameters: dict[str, str],
    call: ThisCall,
    *,
    press: str | None = None,
    heard_at: list[float] | None = None,
) -> int:
    """Twilio's side of a call: stream silence until the bot hangs ``call`` up or closes.

    Args:
        ws_url: The bot's Media Streams WebSocket.
        parameters: The stream's custom parameters, from the TwiML.
        call: The call: its SID, and whether Twilio was told to hang it up.
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
        await twilio.send(json.dumps(_start_message(parameters, call.sid)))
        try:
            async with asyncio.timeout(20):
                for chunk in itertools.count():
                    if call.hung_up():
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
    await eventually(call.hung_up)
    return spoken


async def test_rapport_calls_a_follow_up_back_and_the_call_opens_with_why(
    server: str,
    call: ThisCall,
    ana: CallerIdentity,
    redis_client: Redis,
    module_prefix: str,
    bot_folder: Path,
) -> None:
    # Ana's number was kept, sealed, by an earlier call; someone asked Rapport to call back.
    vault = load_number_vault(bot_folder / "number_key")  # the bot generated it at start
    store = MemoryStore(redis_client, prefix=module_prefix)
    await store.keep_number(ana, vault.seal(call.number, bound_to=ana.hash_tag))
    opening = "Hi Ana Puig, this is the bakery calling back about the birthday cake."
    request = AgentCallback(call_id="CA-earlier", requested_by="Marta", due_at=0, opening=opening)
    await AgentCallbacks(redis_client, prefix=module_prefix).save(ana, request)

    # The bot places it from the business's number; Twilio will fetch the TwiML from our URL.
    await eventually(call.placed)
    (created,) = call.placed()
    assert (created.form["To"], created.form["From"]) == (call.number, DIALLED)
    url = created.form["Url"]
    assert url.startswith(f"https://{PUBLIC_HOST}/callback-answer?")
    assert call.number[1:] not in url

    # Ana picks up: Twilio's signed request for the outbound call (From: the business).
    form = {"From": DIALLED, "To": call.number, "CallSid": call.sid, "AccountSid": ACCOUNT_SID}
    forged = signature(form, url=url.replace("CA-earlier", "CA-other"))
    path = url.split(PUBLIC_HOST, 1)[1]
    assert await post_webhook(server, form, {"X-Twilio-Signature": forged}, path=path) == (403, "")
    parameters = await stream_parameters(server, form, url=url)
    assert parameters["from_number"] == call.number and parameters["to_number"] == DIALLED
    assert parameters["attestation"].startswith(CALLBACK_ATTESTATION)
    await _call(ws_url(server), parameters, call)

    # A normal Rapport call, opening with why we call, recorded as Ana's, trusted.
    assert (await call.heard())[0] == opening
    await eventually(call.queued)
    record = await store.get_call(ana, call.sid)
    assert record is not None and record.trust == CallTrust.VERIFIED
    assert record.transcript[0].text == opening
    # A caller's own webhook cannot claim to be a call back.
    inbound = await stream_parameters(server, call_form(call, f"{CALLBACK_ATTESTATION}x|y"))
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
    kept = await AgentCallbacks(redis_client, prefix=module_prefix).get(ana, "CA-earlier")
    assert kept is not None and kept.status.value == "placed" and kept.call_sid == created.sid


async def test_end_call_speaks_the_goodbye_in_full_before_twilio_is_told_to_hang_up(
    server: str,
    call: ThisCall,
    module_fake: FakeAnthropic,
    ana: CallerIdentity,
    redis_client: Redis,
    module_prefix: str,
) -> None:
    module_fake.script(Reply.tool_call("end_call", {"reason": "caller said goodbye"}, text=GOODBYE))
    parameters = await stream_parameters(server, call_form(call))
    heard_at: list[float] = []
    await _call(ws_url(server), parameters, call, press="1", heard_at=heard_at)

    assert (await call.heard())[-1] == GOODBYE
    (update,) = call.updates()
    assert update.form == {"Status": "completed"}
    # The greeting and the goodbye both reached the caller before the hang-up reached Twilio.
    assert len([at for at in heard_at if at < update.at]) >= 2
    assert not [at for at in heard_at if at > update.at]
    store = MemoryStore(redis_client, prefix=module_prefix)
    await eventually(call.queued)
    record = await store.get_call(ana, call.sid)
    assert record is not None and record.ended_reason is not None
    assert record.ended_reason.startswith(f"ended: {AGENT_ENDED}")
    assert [t.text for t in record.transcript][-2:] == [BYE, GOODBYE]


async def _refused(
    ws_url: str, parameters: dict[str, str], call: ThisCall, *, hang_up: bool = False
) -> int:
    """Open a stream of ``call`` with ``parameters``; the close code the bot answered with.

    With ``hang_up``, the stream is accepted and the test hangs up at once (Twilio's ``stop``).
    """
    async with websockets.connect(ws_url) as twilio:
        await twilio.send(
            json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        )
        await twilio.send(json.dumps(_start_message(parameters, call.sid)))
        if hang_up:
            await twilio.send(json.dumps({"event": "stop", "streamSid": STREAM_SID}))
        with contextlib.suppress(websockets.ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    await twilio.recv()
    return twilio.close_code or 0


def _start_message(parameters: dict[str, str], call_sid: str) -> dict[str, object]:
    return {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": STREAM_SID,
        "start": {
            "accountSid": ACCOUNT_SID,
            "streamSid": STREAM_SID,
            "callSid": call_sid,
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
