"""Assembling one call: memory prefetch at identification, then the call's pipeline.

    transport.in → STT → user aggregator (Silero VAD, silence check)
    → MemoryContextProcessor → LLM → ToolSilenceGuard → TTS → transport.out
    → CallHandoffProcessor (transports that can transfer) → assistant aggregator
    → EndOfCallProcessor (recording, and the call report's meter)

Every frame of a call crosses each processor's queue, so only what must sit on the frame path
does: the call language and the memory processor read the STT's transcripts as it pushes them
(no processor of their own), the call report reads the frames that reach the end, and the
worker runs no observer (Pipecat's turn tracking, which Rapport does not read, is off; the idle
timeout is the silence check's, fed by turn events).

:func:`prepare_call` runs as soon as the caller is known (while the line rings): it identifies
the caller and starts loading their memory. :func:`build_call` then builds the pipeline around
it; without a transport (tests, benchmarks) frames are queued on the worker directly.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from loguru import logger
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMAssistantAggregator,
    LLMContextAggregatorPair,
    LLMUserAggregator,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.services.settings import TTSSettings
from pipecat.transports.base_transport import BaseTransport
from pipecat.workers.runner import WorkerRunner

from bot.call_control import END_CALL, CallControlTools
from bot.call_report import CallMeter
from bot.dialin import connect_dialin_events
from bot.identify import CallOrigin
from bot.service_failure import ServiceFailureHandoff
from bot.services import CallServices, voice_locale
from bot.settings import BotSettings
from bot.silence import SilenceCheck
from bot.tools import CallerTools
from bot.transfer import LineHandoff
from bot.trust import UnverifiedCallers
from bot.wording import (
    CALL_CONNECTED,
    IDLE_GOODBYES,
    PUTTING_THROUGH,
    SERVICE_DOWN_CALL_BACK,
    SERVICE_DOWN_PUTTING_THROUGH,
    SERVICE_DOWN_TRY_LATER,
    STILL_THERE,
    TRANSFER_FAILED,
    opening_line,
    with_hours,
)
from memory.calls.policy import remembered_caller
from memory.calls.recorder import CallRecorder
from memory.errors import MemoryUnavailableError
from memory.metrics import ACTIVE_CALLS
from memory.models import CallerMemory, now
from memory.privacy.identity import CallerIdentity
from memory.recall.call_start import call_start_spec, load_call_start, load_for_recall
from memory.report import load_prices
from memory.runtime import MemoryAccess, MemoryRuntime
from memory.store.digest import CallStartSpec
from processors.call_language import CallLanguage
from processors.end_of_call import EndOfCallProcessor
from processors.memory_context import MemoryContextProcessor
from processors.tool_silence import ToolSilenceGuard

#: Longest wait, once the caller is connected, for the pipeline to start before the opening.
OPENING_TIMEOUT_S = 10.0


@dataclass(slots=True)
class PreparedCall:
    """A call whose caller is identified and whose memory is loading.

    Attributes:
        origin: Transport, raw caller id and call id.
        caller: The caller, or None when anonymous or memory is off.
        memory: The memory load under way; None when there is nothing to load.
        started_at: When the call began (ring time); a forget after it refuses its writes.
        opening: The first words, when they are set in advance (a call back's reason); None:
            the greeting or the line the caller's last analysis prepared.
    """

    origin: CallOrigin
    caller: CallerIdentity | None
    memory: asyncio.Task[CallerMemory | None] | None
    started_at: float = field(default_factory=now)
    opening: str | None = None

    def discard(self) -> None:
        """Stop the memory load of a call that will not run."""
        if self.memory is not None:
            self.memory.cancel()


async def _load(
    runtime: MemoryRuntime, caller: CallerIdentity, spec: CallStartSpec
) -> CallerMemory | None:
    try:
        return await load_call_start(runtime.store, caller, spec)
    except MemoryUnavailableError:
        logger.warning("Memory unavailable for the call of {}; going on without", caller.masked)
        return None


def prepare_call(
    origin: CallOrigin, *, settings: BotSettings, memory: MemoryAccess | None
) -> PreparedCall:
    """Identify the caller and start loading their memory, before any pipeline exists.

    Args:
        origin: Who is calling, from :func:`bot.identify.identify_call`.
        settings: The agent whose caller this is (``agent_id``) and whether memory is on.
        memory: The process's memory, None when off or unavailable.
    """
    if memory is None or not settings.memory_enabled:
        return PreparedCall(origin=origin, caller=None, memory=None)
    caller = remembered_caller(
        memory.runtime,
        origin.caller,
        agent_id=settings.agent_id,
        trust=origin.trust,
        serve_unverified=settings.unverified_callers == UnverifiedCallers.FULL,
        door=origin.transport,
    )
    if caller is None:
        return PreparedCall(origin=origin, caller=None, memory=None)
    spec = call_start_spec(
        purpose=settings.agent_purpose,
        token_budget=settings.memory_token_budget,
        max_facts=settings.max_facts,
        embedder=memory.embedder,
    )
    task = asyncio.create_task(_load(memory.runtime, caller, spec), name=f"memory-{origin.call_id}")
    return PreparedCall(origin=origin, caller=caller, memory=task)


@dataclass(slots=True)
class Call:
    """One call's pipeline, ready to run.

    Attributes:
        worker: The pipeline worker.
        memory_context: The processor that knows the caller's memory once started.
        recorder: Records turns and closes the call; None when nothing is recorded.
        meter: Measures the call for its report and the service's metrics.
        silence: Checks in on a silent caller and ends a call that idles.
    """

    worker: PipelineWorker
    memory_context: MemoryContextProcessor
    recorder: CallRecorder | None
    meter: CallMeter
    silence: SilenceCheck
    _opened: bool = field(default=False, repr=False)
    _ended: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    async def open(self) -> None:
        """Queue the opening (greeting, or the LLM greeting a returning caller by name).

        Call once the caller is connected; waits until the call start has set the prompt. Only
        the first connection opens the call (a WebRTC client may reconnect).
        """
        if self._opened:
            return
        self._opened = True
        opening = asyncio.ensure_future(self.memory_context.opening_frames())
        ended = asyncio.ensure_future(self._ended.wait())
        # A call can end before it starts (its STT refused at set-up): nothing to open then.
        await asyncio.wait(
            {opening, ended}, timeout=OPENING_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        ended.cancel()
        if not opening.done():
            opening.cancel()
            if not self._ended.is_set():
                logger.warning("The call never started; no opening queued")
            return
        await self.worker.queue_frames(opening.result())

    async def hang_up(self) -> None:
        """End the call at once (the caller is gone): a ``CancelFrame`` through the pipeline."""
        await self.worker.cancel(reason="caller hung up")

    async def run(self, *, handle_sigint: bool = False) -> None:
        """Run the pipeline until it ends, is cancelled, or idles out."""
        runner = WorkerRunner(handle_sigint=handle_sigint)
        await runner.add_workers(self.worker)
        ACTIVE_CALLS.inc()
        idle_watch = asyncio.create_task(self.silence.watch(), name="idle-watch")
        self.meter.start()
        try:
            await runner.run()
        finally:
            idle_watch.cancel()
            self._ended.set()
            ACTIVE_CALLS.dec()
            self.meter.finish()


def build_call(
    prepared: PreparedCall,
    *,
    settings: BotSettings,
    services: CallServices,
    memory: MemoryAccess | None,
    prompt_template: str,
    transport: BaseTransport | None = None,
    params: PipelineParams | None = None,
    enable_rtvi: bool = False,
    handoff: LineHandoff | None = None,
) -> Call:
    """Build the pipeline of one call around its prepared memory.

    Args:
        prepared: The identified call from :func:`prepare_call`.
        settings: Budgets, voices, timeouts.
        services: STT, LLM and TTS for this call.
        memory: The process's memory (store, queue), None when off.
        prompt_template: The system prompt template, ``{{memory}}`` still in it.
        transport: The call's transport; None puts nothing before STT or after TTS.
        params: Pipeline parameters (sample rates); metrics are enabled.
        enable_rtvi: Add Pipecat's RTVI processor (the prebuilt browser client speaks it).
        handoff: How the transport hands the caller to a person (``transfer_call``), or on
            when the call's STT, LLM or TTS fails (:mod:`bot.service_failure`); None: it cannot.
    """
    embedder = memory.embedder if memory is not None else None
    CallerTools(
        store=memory.runtime.store if memory is not None else None,
        caller=prepared.caller,
        call_id=prepared.origin.call_id,
        embedder=embedder,
        call_started_at=prepared.started_at,
    ).register(services.llm)
    call_language = _call_language(settings)
    call_language.follow(services.stt)
    memory_context = _memory_context(settings, prepared, prompt_template, memory)
    memory_context.listen(services.stt)
    meter = _call_report(settings, prepared, services, memory_context)
    recorder = _recorder(memory, prepared, meter)
    line = handoff if transport is not None else None
    control = CallControlTools(
        transfer_to=settings.transfer_to,
        transfer_targets=settings.transfer_targets,
        hours=settings.business_hours,
        handoff=line,
        language=lambda: call_language.language,
        putting_through=PUTTING_THROUGH,
        transfer_failed=TRANSFER_FAILED,
        recorder=recorder,
        caller=prepared.caller,
    )
    control.register(services.llm)
    check_in = 0 < settings.silence_check_s < settings.idle_timeout_s
    check_after_s = settings.silence_check_s if check_in else 0
    user, assistant = _context_aggregators(
        control, user_idle_timeout_s=check_after_s or settings.idle_timeout_s
    )
    guard = ToolSilenceGuard(
        filler_after=settings.filler_after_s,
        language=settings.default_language,
        ending_tools={END_CALL.name},
    )
    processors: list[FrameProcessor] = [
        services.stt,
        user,
        memory_context,
        services.llm,
        guard,
        services.tts,
    ]
    if transport is not None:
        processors = [transport.input(), *processors, transport.output()]
        if handing_off := control.handoff_processor(lambda: worker):
            processors.append(handing_off)
    ending = EndOfCallProcessor(
        recorder=recorder, language=settings.default_language, watch=meter.frame_reached_end
    )
    processors += [assistant, ending]
    params = params or PipelineParams()
    params.enable_metrics = True
    params.enable_usage_metrics = True
    worker = PipelineWorker(
        Pipeline(processors),
        params=params,
        idle_timeout_secs=None,  # SilenceCheck's, without an observer on every frame
        enable_turn_tracking=False,  # an observer on every frame, and nothing reads it
        enable_rtvi=enable_rtvi,
    )
    meter.attach(worker)
    silence = SilenceCheck(
        worker=worker,
        check_after_s=check_after_s,
        end_after_s=settings.idle_timeout_s,
        language=lambda: call_language.language,
        still_there=STILL_THERE,
        goodbyes=IDLE_GOODBYES,
    )
    silence.attach(user, assistant)
    call = Call(
        worker=worker,
        memory_context=memory_context,
        recorder=recorder,
        meter=meter,
        silence=silence,
    )
    _service_failure_handoff(settings, prepared, line, call_language, recorder).attach(worker)
    if transport is not None:
        _connect_events(call, transport)
        if prepared.origin.transport == "daily":
            connect_dialin_events(call.worker, transport)
    return call


def _service_failure_handoff(
    settings: BotSettings,
    prepared: PreparedCall,
    line: LineHandoff | None,
    call_language: CallLanguage,
    recorder: CallRecorder | None,
) -> ServiceFailureHandoff:
    return ServiceFailureHandoff(
        handoff=line,
        target=settings.transfer_to,
        hours=settings.business_hours,
        language=lambda: call_language.language,
        voices=settings.voices,
        putting_through=SERVICE_DOWN_PUTTING_THROUGH,
        call_back=SERVICE_DOWN_CALL_BACK,
        try_later=SERVICE_DOWN_TRY_LATER,
        business_name=settings.business_name,
        recorder=recorder,
        masked_caller=prepared.caller.masked if prepared.caller else "an anonymous caller",
    )


def _call_language(settings: BotSettings) -> CallLanguage:
    return CallLanguage(
        voices={
            language: TTSSettings(voice=voice, language=voice_locale(voice))
            for language, voice in settings.voices.items()
        },
        language=settings.default_language,
    )


def _memory_context(
    settings: BotSettings,
    prepared: PreparedCall,
    prompt_template: str,
    memory: MemoryAccess | None,
) -> MemoryContextProcessor:
    store = memory.runtime.store if memory is not None else None
    set_opening = prepared.opening
    opening: Callable[[CallerMemory | None, str], str] = (
        functools.partial(opening_line, business_name=settings.business_name)
        if set_opening is None
        else lambda _memory, _language: set_opening
    )
    return MemoryContextProcessor(
        memory=prepared.memory,
        prompt_template=with_hours(prompt_template, settings.business_hours, datetime.now(UTC)),
        opening=opening,
        voices=settings.voices,
        embedder=memory.embedder if memory is not None else None,
        params=MemoryContextProcessor.Params(
            default_language=settings.default_language,
            load_budget_s=settings.memory_load_budget_ms / 1000,
            max_facts=settings.max_facts,
            token_budget=settings.memory_token_budget,
            purpose=settings.agent_purpose,
            recall_budget_s=settings.recall_budget_ms / 1000,
        ),
        # The call start reads only what its selection needs; recall gets the rest later.
        load_all=(
            functools.partial(load_for_recall, store, prepared.caller, memory.embedder)
            if memory is not None and store is not None and prepared.caller is not None
            else None
        ),
    )


def _call_report(
    settings: BotSettings,
    prepared: PreparedCall,
    services: CallServices,
    memory_context: MemoryContextProcessor,
) -> CallMeter:
    return CallMeter(
        transport=prepared.origin.transport,
        trust=prepared.origin.trust.value,
        prices=load_prices(settings.memory.prices_file),
        stt_model=settings.stt_model,
        llm_model=settings.llm_model,
        services=(services.stt, services.llm, services.tts),
        memory=memory_context.stats if prepared.memory is not None else None,
        load_budget_s=settings.memory_load_budget_ms / 1000,
    )


def _recorder(
    memory: MemoryAccess | None, prepared: PreparedCall, meter: CallMeter
) -> CallRecorder | None:
    """The call's recorder; None when nothing is recorded (memory off, anonymous caller)."""
    if memory is None or prepared.caller is None:
        return None
    return CallRecorder(
        store=memory.runtime.store,
        queue=memory.queue,
        caller=prepared.caller,
        call_id=prepared.origin.call_id,
        trust=prepared.origin.trust,
        report=meter.report,
        sealed_number=memory.runtime.sealed_number(prepared.origin.caller, prepared.caller),
    )


def _context_aggregators(
    control: CallControlTools, *, user_idle_timeout_s: float
) -> tuple[LLMUserAggregator, LLMAssistantAggregator]:
    """The call's context, opened by a user turn so the spoken greeting can follow it."""
    pair = LLMContextAggregatorPair(
        LLMContext(
            messages=[{"role": "user", "content": CALL_CONNECTED}],
            tools=ToolsSchema(
                standard_tools=[*CallerTools.schema().standard_tools, *control.schemas()]
            ),
        ),
        user_params=LLMUserAggregatorParams(
            vad_analyzer=SileroVADAnalyzer(), user_idle_timeout=user_idle_timeout_s
        ),
    )
    return pair.user(), pair.assistant()


def _connect_events(call: Call, transport: BaseTransport) -> None:
    @transport.event_handler("on_client_connected")
    async def _on_connected(_transport: BaseTransport, _client: object) -> None:
        await call.open()

    @transport.event_handler("on_client_disconnected")
    async def _on_disconnected(_transport: BaseTransport, _client: object) -> None:
        await call.hang_up()
