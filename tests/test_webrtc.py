"""The local WebRTC room, through the real server: the caller named in ``/start`` is recognised.

What the prebuilt browser client does, done by an ``aiortc`` peer: ``POST /start`` with
``{"transport": "webrtc", "body": {"caller": ...}}``, then the SDP offer to
``/sessions/{id}/api/offer``. The bot (``tests/fakes/text_bot.py``: ``runner.py`` with text in
place of audio) identifies the caller from that body and opens the call with their memory.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack
from redis.asyncio import Redis

from memory.models import CallRecord
from memory.privacy.identity import identify
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.text_bot import bot_env, serving
from tests.support.polling import eventually
from tests.support.values import PEPPER

#: Runs the bot in a subprocess (see pyproject.toml).
pytestmark = pytest.mark.slow

CALLER = "+14155550123"

#: Long enough for the call to start and the greeting to be spoken to the peer.
GREETING_S = 3.0


async def join(
    http: aiohttp.ClientSession, url: str, body: dict[str, str]
) -> tuple[str, RTCPeerConnection]:
    """Join the local room as the prebuilt client does, with ``body`` in the start request.

    Returns:
        The session id (the call's id) and the peer connection.
    """
    async with http.post(f"{url}/start", json={"transport": "webrtc", "body": body}) as response:
        session = (await response.json())["sessionId"]
    peer = RTCPeerConnection()
    peer.addTrack(AudioStreamTrack())  # a microphone that hears silence
    await peer.setLocalDescription(await peer.createOffer())  # gathers host candidates
    local = {"sdp": peer.localDescription.sdp, "type": peer.localDescription.type}
    async with http.post(f"{url}/sessions/{session}/api/offer", json=local) as response:
        answer = await response.json()
    await peer.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    return session, peer


async def queued_calls(redis: Redis, prefix: str) -> list[str]:
    entries = await redis.xrange(AnalysisQueue(redis, prefix=prefix).stream_key)
    return [fields[b"call"].decode() for _, fields in entries]


async def call_once(url: str, body: dict[str, str]) -> str:
    """Join the room, stay for the greeting, leave; the call's id."""
    async with aiohttp.ClientSession() as http:
        session, peer = await join(http, url, body)
        try:
            # The greeting is stored once the bot has spoken it, which needs the peer's audio.
            await asyncio.sleep(GREETING_S)
        finally:
            await peer.close()  # the browser leaves: the call ends
    return session


async def test_the_caller_given_to_the_local_room_is_greeted_with_their_memory(
    tmp_path: Path, redis_url: str, redis_client: Redis, key_prefix: str, fake: FakeAnthropic
) -> None:
    caller = identify(CALLER, agent_id="default", pepper=PEPPER.encode())
    assert caller is not None
    store = MemoryStore(redis_client, prefix=key_prefix)
    await store.set_name(caller, "Ana Puig")
    await store.close_call(caller, CallRecord(call_id="earlier", agent_id="default"))
    env = bot_env(redis_url, key_prefix, fake.base_url)
    secrets = (CALLER, CALLER[2:])
    async with serving(env=env, folder=tmp_path, secrets=secrets) as url:
        session = await call_once(url, {"caller": CALLER})
        await eventually(lambda: queued_calls(redis_client, key_prefix))
    # Greeted by name at once, from memory, with no LLM request.
    record = await store.get_call(caller, session)
    assert record is not None and record.transcript
    assert record.transcript[0].text.startswith("Hello again, Ana Puig,")
    assert fake.requests == []
    assert await queued_calls(redis_client, key_prefix) == [session]


@pytest.mark.parametrize("test_room", [False, True])
async def test_beyond_loopback_the_room_names_no_caller_unless_enabled(
    tmp_path: Path,
    redis_url: str,
    redis_client: Redis,
    key_prefix: str,
    fake: FakeAnthropic,
    test_room: bool,
) -> None:
    caller = identify(CALLER, agent_id="default", pepper=PEPPER.encode())
    assert caller is not None
    store = MemoryStore(redis_client, prefix=key_prefix)
    await store.set_name(caller, "Ana Puig")
    env = bot_env(redis_url, key_prefix, fake.base_url, RAPPORT_TEST_ROOM=str(test_room).lower())
    secrets = (CALLER, CALLER[2:])
    async with serving(env=env, folder=tmp_path, secrets=secrets, host="0.0.0.0") as url:
        session = await call_once(url, {"caller": CALLER})
        if test_room:
            await eventually(lambda: queued_calls(redis_client, key_prefix))
        else:
            await asyncio.sleep(1)
    log = await asyncio.to_thread((tmp_path / "bot.log").read_text)
    if test_room:
        assert await queued_calls(redis_client, key_prefix) == [session]
    else:  # served as anonymous: nothing of Ana's is read or recorded, and the log says why
        assert await queued_calls(redis_client, key_prefix) == []
        assert await store.get_call(caller, session) is None
        assert "caller number was ignored: the server listens beyond loopback" in log
