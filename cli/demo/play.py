"""Playing the demo week: each call through the bot's own pipeline, then the analysis worker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from anthropic import AsyncAnthropic
from pipecat.frames.frames import TranscriptionFrame
from pipecat.transcriptions.language import Language

from bot.identify import CallOrigin
from bot.pipeline import Call, build_call, prepare_call
from bot.services import CallServices, build_llm
from bot.settings import BotSettings
from bot.text_line import SilentTTS, TextLine, TextSTT
from bot.wording import prompt_template
from cli.demo.model import ScriptedModel
from cli.demo.week import BUSINESS, DENTIST_ON_CALL, WEEK, DemoCall, WeekScript
from memory.analysis.analyzer import DEFAULT_ACTIONS
from memory.analysis.settings import AnalysisSettings
from memory.analysis.worker import AnalysisWorker, analysis_worker
from memory.errors import ConfigurationError
from memory.models import CallTrust
from memory.runtime import MemoryAccess, memory_runtime
from memory.settings import MemorySettings
from memory.store.queue import AnalysisQueue

__all__ = ["BUSINESS", "play_week"]

#: Longest a demo call may take before the demo gives up on it (it takes well under a second).
CALL_TIMEOUT_S = 30.0


async def play_week(settings: MemorySettings, *, agent_id: str, fields: Path | None) -> int:
    """Play every call of the week for ``agent_id`` and analyse them; how many calls.

    Raises:
        ConfigurationError: The data folder already holds calls of ``agent_id``, or the fields
            file is bad.
    """
    async with memory_runtime(settings) as runtime:
        if await runtime.store.list_callers(agent_id, limit=1):
            raise ConfigurationError(
                f"{settings.data_dir} already holds calls of agent {agent_id!r}: "
                "give the demo another --data folder or --agent"
            )
        queue = AnalysisQueue(runtime.redis, prefix=settings.key_prefix)
        memory = MemoryAccess(runtime=runtime, queue=queue)
        async with ScriptedModel(WeekScript(WEEK)) as model:
            # What the week is scripted for, whatever the environment says of the business.
            bot = BotSettings(
                ANTHROPIC_API_KEY="demo",
                ANTHROPIC_BASE_URL=model.base_url,
                RAPPORT_AGENT_ID=agent_id,
                RAPPORT_BUSINESS_NAME=BUSINESS,
                RAPPORT_MEMORY_ENABLED=True,
                RAPPORT_TRANSFER_TO=DENTIST_ON_CALL,
                RAPPORT_TRANSFER_TARGETS={},
                RAPPORT_BUSINESS_HOURS=None,  # always open: the transfer is taken
                memory=settings,
            )
            analysis = AnalysisSettings(
                ANTHROPIC_API_KEY="demo",
                ANTHROPIC_BASE_URL=model.base_url,
                RAPPORT_BUSINESS_NAME=BUSINESS,
                RAPPORT_ANALYSIS_ACTIONS=list(DEFAULT_ACTIONS),
                RAPPORT_ANALYSIS_FIELDS=fields,
                # The week's unusable answer becomes a dead letter at once, not after retries.
                RAPPORT_ANALYSIS_MAX_INVALID_RETRIES=0,
                RAPPORT_ANALYSIS_WEBHOOK_URL=None,
            )
            client = AsyncAnthropic(api_key="demo", base_url=model.base_url)
            played = 0
            async with analysis_worker(runtime.store, queue, analysis) as worker:
                for round_ in WEEK:
                    for call in round_:
                        played += 1
                        await _place(call, f"demo-{played:02d}", bot, memory, client, model)
                    await _analyse_queued(worker, queue)
            await client.close()
        return played


class _NobodyThere:
    """The demo line's hand-off: every transfer is accepted, to nobody (no call leaves here)."""

    async def __call__(self, target: str) -> bool:
        return True

    async def hand_on(self, *, say: str, locale: str, target: str | None) -> bool:
        return True


async def _place(
    call: DemoCall,
    call_id: str,
    settings: BotSettings,
    memory: MemoryAccess,
    client: AsyncAnthropic,
    model: ScriptedModel,
) -> None:
    """One call, start to end, as a caller on a text line would make it."""
    origin = CallOrigin(
        transport="demo", caller=call.caller.number, call_id=call_id, trust=CallTrust.VERIFIED
    )
    prepared = prepare_call(origin, settings=settings, memory=memory)
    template = prompt_template(settings)
    llm = build_llm(settings, client=client, system_instruction=template)
    pipeline = build_call(
        prepared,
        settings=settings,
        services=CallServices(stt=TextSTT(), llm=llm, tts=SilentTTS()),
        memory=memory,
        prompt_template=template,
        transport=TextLine(),
        handoff=_NobodyThere(),
    )
    running = asyncio.create_task(pipeline.run())
    try:
        async with asyncio.timeout(CALL_TIMEOUT_S):
            await _converse(pipeline, call, model)
            await asyncio.shield(running)  # the last reply ends the call (or puts it through)
            if pipeline.recorder is not None:
                await pipeline.recorder.wait_closed()
    finally:
        if not running.done():
            await pipeline.worker.cancel(reason="demo call timed out")
            await running


async def _converse(pipeline: Call, call: DemoCall, model: ScriptedModel) -> None:
    await pipeline.open()
    language = Language(call.caller.language)
    for exchange in call.exchanges:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        frame = TranscriptionFrame(exchange.said, "caller", stamp, language)
        answered = model.answered
        await pipeline.worker.queue_frame(frame)
        await model.wait_answered(answered + 1)
        if exchange.reply.tool is None:
            await pipeline.worker.flush_pipeline()


async def _analyse_queued(worker: AnalysisWorker, queue: AnalysisQueue) -> None:
    """Analyse every call the queue holds (one at a time, as one worker slot would)."""
    while (await queue.counts()).waiting:
        job = await worker.next_job()
        if job is not None:
            await worker.process(job)
