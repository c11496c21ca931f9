"""End to end, frames in place of audio: a caller is remembered from one call to the next.

The call is assembled by the bot's own code (``prepare_call`` + ``build_call``) with the real
``AnthropicLLMService`` pointed at the local Anthropic fake, a real Redis, the real memory,
recorder and queue; only the STT and TTS are replaced (``tests/fakes/text_speech.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pipecat.frames.frames import CancelFrame, EndFrame, Frame, TranscriptionFrame

from bot.identify import CallOrigin
from bot.pipeline import Call, MemoryAccess, build_call, prepare_call
from bot.services import CallServices, build_llm
from bot.settings import BotSettings
from bot.wording import greetings, prompt_template
from memory.identity import CallerIdentity
from memory.queue import AnalysisQueue
from memory.runtime import open_memory
from memory.settings import MemorySettings
from tests.fakes.anthropic_server import FakeAnthropic, Reply
from tests.fakes.text_speech import SilentTTS, TextSTT

ANA = "+1 (415) 555-0123"
OTHER = "+14155550188"
PEPPER = "test-pepper-0123456789abcdef"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(api_key="test-key") as server:
        yield server


@pytest.fixture
async def memory(redis_url: str, key_prefix: str) -> AsyncIterator[MemoryAccess]:
    settings = MemorySettings(
        _env_file=None, REDIS_URL=redis_url, RAPPORT_PEPPER=PEPPER, RAPPORT_KEY_PREFIX=key_prefix
    )
    runtime = await open_memory(settings)
    try:
        yield MemoryAccess(runtime=runtime, queue=AnalysisQueue(runtime.redis, prefix=key_prefix))
    finally:
        await runtime.aclose()


def bot_settings(fake: FakeAnthropic, *, agent: str = "bakery", **extra: Any) -> BotSettings:
    return BotSettings(
        _env_file=None,
        ANTHROPIC_API_KEY="test-key",
        ANTHROPIC_BASE_URL=fake.base_url,
        RAPPORT_AGENT_ID=agent,
        RAPPORT_BUSINESS_NAME="Bella's Bakery",
        **extra,
    )


class RunningCall:
    """A call running in the background, driven with frames like a caller would."""

    def __init__(self, call: Call, fake: FakeAnthropic) -> None:
        self.call = call
        self._fake = fake
        self._task = asyncio.create_task(call.run())

    async def say(self, text: str, *, replies: int) -> None:
        """The caller says ``text``; wait until the LLM has been asked ``replies`` more times."""
        target = len(self._fake.requests) + replies
        await self.call.worker.queue_frame(TranscriptionFrame(text, "caller", _now()))
        await until(lambda: len(self._fake.requests) >= target)
        assert await self.call.worker.flush_pipeline()

    async def end(self, frame: Frame) -> None:
        if isinstance(frame, CancelFrame):
            await self.call.worker.cancel(reason="test hang-up")
        else:
            await self.call.worker.queue_frame(frame)
        await asyncio.wait_for(self._task, 10)
        assert self.call.recorder is not None
        await asyncio.wait_for(self.call.recorder.wait_closed(), 10)


async def start_call(
    number: str | None,
    call_id: str,
    *,
    settings: BotSettings,
    memory: MemoryAccess,
    fake: FakeAnthropic,
) -> RunningCall:
    origin = CallOrigin(transport="webrtc", caller=number, call_id=call_id)
    prepared = prepare_call(origin, settings=settings, memory=memory)
    template = prompt_template(settings)
    services = CallServices(stt=TextSTT(), llm=build_llm(settings, template), tts=SilentTTS())
    call = build_call(
        prepared, settings=settings, services=services, memory=memory, prompt_template=template
    )
    running = RunningCall(call, fake)
    await asyncio.wait_for(call.open(), 10)  # what the transport's "client connected" does
    return running


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def queued_calls(memory: MemoryAccess) -> list[str]:
    entries = await memory.runtime.redis.xrange(memory.queue.stream_key)
    return [fields[b"call"].decode() for _, fields in entries]


def identity(memory: MemoryAccess, number: str, agent: str = "bakery") -> CallerIdentity:
    caller = memory.runtime.identify(number, agent_id=agent)
    assert caller is not None
    return caller


async def test_a_caller_is_remembered_on_the_next_call(
    fake: FakeAnthropic, memory: MemoryAccess
) -> None:
    settings = bot_settings(fake)
    fake.script(
        Reply.tool_call("save_caller_name", {"name": "Ana Puig"}),
        Reply.tool_call("remember", {"fact": "Caller is vegetarian"}),
        Reply.text("Noted, Ana. What can I get you?"),
    )
    first = await start_call(ANA, "call-1", settings=settings, memory=memory, fake=fake)
    await first.say("Hi, I'm Ana Puig. Please remember that I'm vegetarian.", replies=3)
    await first.end(EndFrame())

    # The greeting came first (no LLM request for a first-time caller), then the tool rounds.
    assert "{{" not in fake.requests[0].system_text
    assert "Ana" not in fake.requests[0].system_text
    assert [r.tool_results() for r in fake.requests] == [
        [],
        ['{"saved": true, "name": "Ana Puig"}'],
        ['{"saved": true, "name": "Ana Puig"}', '{"saved": true, "fact": "Caller is vegetarian"}'],
    ]
    ana = identity(memory, ANA)
    store = memory.runtime.store
    (fact,) = await store.all_facts(ana)
    assert (fact.text, fact.confidence, fact.source_call_id) == (
        "Caller is vegetarian",
        0.95,
        "call-1",
    )
    record = await store.get_call(ana, "call-1")
    assert record is not None and record.ended_reason == "ended"
    assert [(t.role, t.text) for t in record.transcript] == [
        ("assistant", greetings("Bella's Bakery")["en"]),
        ("user", "Hi, I'm Ana Puig. Please remember that I'm vegetarian."),
        ("assistant", "Noted, Ana. What can I get you?"),
    ]
    assert await queued_calls(memory) == ["call-1"]

    # Call 2, same number: the very first request already knows Ana and her diet.
    fake.script(Reply.text("Welcome back, Ana!"))
    second = await start_call(ANA, "call-2", settings=settings, memory=memory, fake=fake)
    await until(lambda: len(fake.requests) == 4)
    assert await second.call.worker.flush_pipeline()
    opening = fake.requests[3]
    assert "Ana Puig" in opening.system_text and "Caller is vegetarian" in opening.system_text
    assert "{{" not in opening.system_text
    await second.end(CancelFrame())
    assert await queued_calls(memory) == ["call-1", "call-2"]
    record = await store.get_call(ana, "call-2")
    assert record is not None and record.ended_reason.startswith("cancelled")

    # Another number, and the same number calling another agent: nothing of Ana's.
    for number, agent, call_id in ((OTHER, "bakery", "call-3"), (ANA, "florist", "call-4")):
        fake.script(Reply.text("Hello! How can I help?"))
        other = await start_call(
            number, call_id, settings=bot_settings(fake, agent=agent), memory=memory, fake=fake
        )
        await other.say("Hello, do you have bread today?", replies=1)
        request = fake.requests[-1]
        assert "Ana" not in request.system_text and "vegetarian" not in request.system_text
        await other.end(EndFrame())
    assert await queued_calls(memory) == ["call-1", "call-2", "call-3", "call-4"]
