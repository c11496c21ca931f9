"""The call harness of the end-to-end tests: the bot's own call assembly, driven like a caller.

Calls are assembled by the bot's own code (``prepare_call`` + ``build_call``) with the real
``AnthropicLLMService`` pointed at the local Anthropic fake, a real Redis, and the real memory,
recorder and analysis queue. Only the STT and TTS are replaced (``bot/text_line.py``):
the caller's words arrive as ``TranscriptionFrame``s. The ``line`` fixture (``conftest.py``)
gives a :class:`Line`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anthropic import AsyncAnthropic
from pipecat.frames.frames import EndFrame, TranscriptionFrame
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transcriptions.language import Language
from pipecat.transports.base_transport import BaseTransport

from bot.identify import CallOrigin
from bot.pipeline import Call, build_call, prepare_call
from bot.services import CallServices, build_llm
from bot.settings import BotSettings
from bot.text_line import SilentTTS, TextSTT
from bot.transfer import LineHandoff, TwilioCallSerializer, TwilioHandoff
from bot.wording import opening_line, prompt_template
from memory.analysis.analyzer import TOOL_NAME
from memory.analysis.settings import AnalysisSettings
from memory.analysis.worker import JobOutcome, analysis_worker
from memory.models import CallRecord, CallStatus, CallTrust
from memory.privacy.identity import CallerIdentity
from memory.runtime import MemoryAccess, MemoryRuntime, open_memory
from memory.settings import MemorySettings
from memory.store.queue import AnalysisQueue
from tests.fakes.anthropic_server import FakeAnthropic, Reply
from tests.fakes.twilio_api import FakeTwilioAPI
from tests.support.polling import eventually
from tests.support.values import PEPPER

ANA = "+1 (415) 555-0123"
OTHER = "+14155550188"
GREETING = opening_line(None, "en", business_name="Bella's Bakery")


#: The Twilio account and call of the hand-off tests (the REST fake checks neither).
ACCOUNT_SID, AUTH_TOKEN = "AC0123456789abcdef0123456789abcdef", "test-auth-token"
CALL_SID = "CA0123456789abcdef0123456789abcdef"


def twilio_handoff(api: FakeTwilioAPI) -> tuple[TwilioCallSerializer, TwilioHandoff]:
    """A call's serializer and hand-off, as ``bot.twilio.twilio_transport`` builds them."""
    serializer = TwilioCallSerializer(
        stream_sid="MZ0123",
        call_sid=CALL_SID,
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        base_url=api.base_url,
    )
    handoff = TwilioHandoff(
        serializer=serializer,
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        call_sid=CALL_SID,
        base_url=api.base_url,
    )
    return serializer, handoff


async def open_line(redis_url: str, key_prefix: str) -> MemoryAccess:
    """The memory of a business line for the e2e tests (close its runtime after)."""
    settings = MemorySettings(
        REDIS_URL=redis_url, RAPPORT_PEPPER=PEPPER, RAPPORT_KEY_PREFIX=key_prefix
    )
    runtime = await open_memory(settings)
    return MemoryAccess(runtime=runtime, queue=AnalysisQueue(runtime.redis, prefix=key_prefix))


class Line:
    """A business line taking calls: the bot's call assembly, the LLM fake, the memory."""

    def __init__(
        self, fake: FakeAnthropic, client: AsyncAnthropic, memory: MemoryAccess | None
    ) -> None:
        self.fake = fake
        self._client = client
        self.memory = memory

    def settings(self, *, agent: str = "bakery", **extra: Any) -> BotSettings:
        return BotSettings(
            ANTHROPIC_API_KEY="test-key",
            ANTHROPIC_BASE_URL=self.fake.base_url,
            RAPPORT_AGENT_ID=agent,
            RAPPORT_BUSINESS_NAME="Bella's Bakery",
            **extra,
        )

    @asynccontextmanager
    async def call(
        self,
        number: str | None,
        call_id: str,
        *,
        agent: str = "bakery",
        trust: CallTrust = CallTrust.VERIFIED,
        transport: BaseTransport | None = None,
        kind: str = "webrtc",
        handoff: LineHandoff | None = None,
        stt: FrameProcessor | None = None,
        tts: FrameProcessor | None = None,
        **extra: Any,
    ) -> AsyncIterator[RunningCall]:
        """A connected call (its opening queued); cancelled if the test leaves it running.

        ``transport`` (a stand-in line: ``bot.text_line.TextLine``) and ``kind`` (the
        ``CallOrigin.transport``) put a line around the pipeline; ``handoff`` is how that line
        transfers a caller; ``stt`` and ``tts`` replace the text stand-ins (a failing service).
        """
        settings = self.settings(agent=agent, **extra)
        origin = CallOrigin(transport=kind, caller=number, call_id=call_id, trust=trust)
        prepared = prepare_call(origin, settings=settings, memory=self.memory)
        template = prompt_template(settings)
        llm = build_llm(settings, client=self._client, system_instruction=template)
        call = build_call(
            prepared,
            settings=settings,
            services=CallServices(stt=stt or TextSTT(), llm=llm, tts=tts or SilentTTS()),
            memory=self.memory,
            prompt_template=template,
            transport=transport,
            handoff=handoff,
        )
        running = RunningCall(call, self.fake)
        try:
            await asyncio.wait_for(call.open(), 10)  # the transport's "client connected"
            yield running
        finally:
            await running.stop()


class RunningCall:
    """A call running in the background, driven like a caller would."""

    def __init__(self, call: Call, fake: FakeAnthropic) -> None:
        self.call = call
        self._fake = fake
        self._task = asyncio.create_task(call.run())

    async def say(self, text: str, *, replies: int, language: str | None = None) -> None:
        """The caller says ``text`` (in ``language``, as Deepgram tags it); wait until the LLM
        was asked ``replies`` more times."""
        # A caller answers what they heard: words over the opening line would interrupt it.
        assert await self.call.worker.flush_pipeline()
        target = len(self._fake.requests) + replies
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        frame = TranscriptionFrame(text, "caller", stamp, Language(language) if language else None)
        await self.call.worker.queue_frame(frame)
        await eventually(lambda: len(self._fake.requests) >= target)
        assert await self.call.worker.flush_pipeline()

    async def hang_up(self) -> None:
        """The caller hangs up (what the transport's "client disconnected" does)."""
        await self.call.hang_up()
        await self.finished()

    async def end(self) -> None:
        """The pipeline ends normally (``EndFrame``)."""
        await self.call.worker.queue_frame(EndFrame())
        await self.finished()

    async def finished(self) -> None:
        """Wait until the pipeline is gone and the call is closed and queued."""
        await asyncio.wait_for(asyncio.shield(self._task), 10)
        if self.call.recorder is not None:
            await asyncio.wait_for(self.call.recorder.wait_closed(), 10)

    async def stop(self) -> None:
        if not self._task.done():
            await self.call.worker.cancel(reason="test over")
        await asyncio.wait_for(self._task, 10)


def runtime_of(line: Line) -> MemoryRuntime:
    assert line.memory is not None
    return line.memory.runtime


def caller_of(line: Line, number: str, agent: str = "bakery") -> CallerIdentity:
    caller = runtime_of(line).identify(number, agent_id=agent)
    assert caller is not None
    return caller


async def queued_calls(line: Line) -> list[str]:
    assert line.memory is not None
    entries = await line.memory.runtime.redis.xrange(line.memory.queue.stream_key)
    return [fields[b"call"].decode() for _, fields in entries]


async def analysed_in_history(line: Line, call_id: str, agent: str = "bakery") -> CallRecord:
    """The call as the SQL call history keeps it once analysed (it must be there, analysed)."""
    history = runtime_of(line).store.history
    assert history is not None
    kept = await history.call(agent, call_id)
    assert kept is not None and kept.record.status == CallStatus.ANALYSED
    return kept.record


async def analyse_queued(line: Line, fake: FakeAnthropic, answer: dict[str, Any]) -> None:
    """Run the analysis worker once on the queued call, the LLM answering ``answer``."""
    assert line.memory is not None
    fake.script(Reply.tool_call(TOOL_NAME, answer))
    settings = AnalysisSettings(api_key="test-key", base_url=fake.base_url)
    async with analysis_worker(runtime_of(line).store, line.memory.queue, settings) as worker:
        job = await worker.next_job()
        assert job is not None
        assert await worker.process(job) == JobOutcome.ANALYSED
