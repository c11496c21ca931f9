"""What the Rapport processors add to a call's frame path, in one run.

    python -m bench.pipeline_overhead [--turns 300] [--frames 1000] [--starts 100]
        [--speech-turns 80] [--json]

The Rapport variants are the bot's own call assembly (``bot.pipeline.build_call``: the memory
context, tool-silence and end-of-call processors, the call language and the call report reading
frames where they pass, the silence check, tools registered, metrics on) with a pass-through STT
and TTS and an "LLM" answering every request at once. The baselines are the same text pipeline
by hand, with the worker set up as ``build_call`` sets it up (metrics on, no idle-timeout
observer, no turn tracking): without the Rapport processors, and with four do-nothing processors
in their places (where the call language, memory context, tool-silence and end-of-call
processors sat in the first release; Pipecat's default, queued processors, as the first
release's were: Rapport's now run in Pipecat's direct mode, and a do-nothing processor in
direct mode is one of the pieces measured). Each piece is also measured alone on the baseline (what
it adds to a turn), with the observers ``build_call`` no longer runs beside them. The memory is
prefetched and calls are recorded on a real Redis (the embedded server in a temporary folder, or
``REDIS_URL``).
The Rapport variant runs twice: recall lexical only, and with the default E5 embedder (stored
fact embeddings, as the analysis worker writes them). ``build_call``'s Silero VAD is built but
never runs: the bench sends text, and a VAD only reads audio. Times are taken from Pipecat's own
push stamps by an observer (``Stopwatch``), so nothing is added to the pipeline under test.
Everything runs on the bot's event loop (uvloop: see :func:`bench.report.run`).
Measured, interleaved so machine noise hits every variant alike:

- frame transit: a data frame from entering the pipeline to leaving it (every processor passes
  it);
- turn: a ``TranscriptionFrame`` in, until the assistant's turn leaves the pipeline;
- call start: ``StartFrame`` until the opening line reaches the TTS (each start on a quiet
  process: the previous call's background work has settled); and, in the Rapport variants,
  how long the memory processor holds it (``StartFrame`` in to system prompt out);
- metrics collection: the call report's meter (``bot/call_report.py``) fed, one turn at a
  time, every frame of a real turn of the lexical variant that reached the pipeline's end plus
  the frames a voice turn adds (VAD stop, bot speaking, TTFB and usage metrics of the three
  services): the CPU time it adds per turn, on the frame path (in ``EndOfCallProcessor``);
- dense recall in time: one call with E5 in which the caller speaks: each turn's words arrive
  as interim transcripts, one word at a time at speech pace (``WORD_S`` a word, jittered), then
  the final transcript ``FINAL_AFTER_S`` after the last interim. In ``LAGGED_SHARE`` of the
  turns no interim showed the last word yet, and in ``REVISED_SHARE`` the final transcript
  changed the last word (assumed shares: how often a real STT does either was not measured
  here). The share of turns searched with a vector in time, by kind of turn: their words' own,
  or the words heard so far; and the time each turn spent in recall;
- Redis: commands per turn (the recorder's appends, off the frame path), and round trips *on*
  the frame path, found by adding 5 ms to every Redis round trip through a local proxy and
  seeing how much the turn slows down (turn delay / 5 ms; 0 when nothing awaits Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    DataFrame,
    Frame,
    InterimTranscriptionFrame,
    LLMContextAssistantTurnFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    LLMUpdateSettingsFrame,
    MetricsFrame,
    StartFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    TTSUpdateSettingsFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import (
    LLMTokenUsage,
    LLMUsageMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.pipeline import Pipeline, PipelineSink
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import TTSSettings
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.workers.runner import WorkerRunner
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from bench import report
from bot.call_report import CallMeter
from bot.identify import CallOrigin
from bot.pipeline import Call, PreparedCall, build_call
from bot.services import CallServices
from bot.settings import BotSettings
from memory.backend.connect import open_redis
from memory.calls.recorder import CallRecorder
from memory.models import CallerMemory, CallRecord, Fact, Turn
from memory.privacy.identity import CallerIdentity, identify
from memory.recall.embeddings import Embedder, default_embedder, with_embeddings
from memory.recall.turns import MemoryStats
from memory.report import load_prices
from memory.runtime import MemoryAccess, MemoryRuntime, freeze_startup_objects
from memory.settings import MemorySettings
from memory.store.callers import MemoryStore
from memory.store.queue import AnalysisQueue
from processors.call_language import CallLanguage
from processors.end_of_call import EndOfCallProcessor
from processors.memory_context import MemoryContextProcessor
from processors.tool_silence import ToolSilenceGuard

PEPPER = b"benchmark-pepper-0123456789abcdef"
AGENT = "bench"
PURPOSE = "Answer questions, take bookings and messages, and arrange call-backs."
TEMPLATE = "You answer the phone for a bakery.\n\n{{memory}}"
PROXY_DELAY_S = 0.005
#: Rounds run first and not kept, in every measurement.
WARM_UP = 3
#: Pause between call starts for the previous call's background work to finish.
SETTLE_S = 0.05
FACTS = [
    "Caller is vegetarian",
    "Caller prefers weekday mornings",
    "Caller has a nut allergy",
    "Caller orders a sourdough loaf every Friday",
    "Caller's daughter is called Marta",
    "Caller pays by card",
    "Caller lives near the harbour",
    "Caller likes rye bread",
    "Caller once complained about a late delivery",
    "Caller wants birthday cakes without sugar icing",
]
QUESTIONS = [
    "Do you have sourdough today?",
    "What time do you close on Friday?",
    "Can I order a birthday cake?",
    "Is the rye bread vegan?",
]
#: The variants, in the order they are reported.
BASELINE, PASS, LEXICAL, E5 = (
    "baseline",
    "4 pass-through processors",
    "with processors",
    "with processors + E5",
)
VARIANTS = (BASELINE, PASS, LEXICAL, E5)
ADDED = (PASS, LEXICAL, E5)
#: Each piece alone on the baseline, and whether build_call runs it.
PIECES = {
    "a do-nothing processor": False,
    "a do-nothing processor in direct mode (as Rapport's run)": False,
    "MemoryContextProcessor, lexical recall": True,
    "MemoryContextProcessor, E5 (embedding the final transcript)": True,
    "ToolSilenceGuard": True,
    "EndOfCallProcessor (recorder, call report's meter)": True,
    "CallLanguage (reads the STT's pushes)": True,
    "a do-nothing observer (the first release's call report ran one)": False,
    "Pipecat's turn-tracking observer (on by default)": False,
    "Pipecat's idle-timeout observer (with an idle timeout)": False,
}
#: What the caller says in the speech simulation: words at speech pace, one interim each.
SPOKEN = [
    "Hi, do you still have the sourdough loaf I usually get on Fridays?",
    "I wanted to order a birthday cake for my daughter Marta next week",
    "Is there anything without nuts, because of my allergy?",
    "Could you deliver it to the flat near the harbour in the morning?",
    "And can I pay by card when it arrives?",
    "Last time the delivery was late, so I want to make sure",
    "Do you have rye bread today or only on weekends?",
    "Please no sugar icing on the cake this time",
]
#: Seconds per spoken word (about 170 words a minute), jittered by half either way.
WORD_S = 0.35
#: From the last word's interim transcript to the final one (endpointing, end of turn).
FINAL_AFTER_S = 0.2
#: Turns whose last word no interim transcript showed (the final one adds it).
LAGGED_SHARE = 0.2
#: Turns whose final transcript ends in another word than their last interim one.
REVISED_SHARE = 0.1


class ProbeFrame(DataFrame):
    """A frame every processor passes on, timed from entering the pipeline to leaving it."""


class PassThrough(FrameProcessor):
    """Does nothing: what any processor costs in Pipecat (its queue hop), for comparison.

    ``direct=True`` makes it a direct-mode processor (no queue and task of its own), as
    Rapport's processors are.
    """

    def __init__(self, *, direct: bool = False) -> None:
        super().__init__(enable_direct_mode=direct)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


class EchoLLM(LLMService):
    """Stands in for the LLM: answers each request at once with one short sentence.

    An ``LLMService`` as ``AnthropicLLMService`` is (it takes the call's tools and settings),
    with no network in the way: the turn times are the processors', not a model's.
    """

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self.push_frame(LLMFullResponseStartFrame())
            await self.push_frame(LLMTextFrame("Yes, we do."))
            await self.push_frame(LLMFullResponseEndFrame())
        else:  # as AnthropicLLMService does
            await self.push_frame(frame, direction)


class TextTTS(FrameProcessor):
    """Stands in for the TTS: passes text on, consumes its settings."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, TTSUpdateSettingsFrame):
            await self.push_frame(frame, direction)


Pushed = Callable[[FramePushed], bool]


@dataclass
class _Watch:
    enters: Pushed
    leaves: Pushed
    done: asyncio.Future[float]
    entered_at: int | None = None


class Stopwatch(BaseObserver):
    """Times frames between two pushes, from the stamps Pipecat puts on every push.

    An observer rather than processors put in the pipeline, so ``build_call``'s pipeline is
    timed as the bot builds it. Pipecat stamps a push (its pipeline clock) as it happens; the
    observer reads the stamps later on its own task, which adds nothing to the times.
    """

    def __init__(self) -> None:
        super().__init__()
        self._watches: list[_Watch] = []

    def expect(self, enters: Pushed, leaves: Pushed) -> asyncio.Future[float]:
        """Seconds from the first push matching ``enters`` to the next matching ``leaves``."""
        done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._watches.append(_Watch(enters, leaves, done))
        return done

    async def on_push_frame(self, data: FramePushed) -> None:
        for watch in list(self._watches):
            if watch.entered_at is None:
                if watch.enters(data):
                    watch.entered_at = data.timestamp
            elif watch.leaves(data):
                self._watches.remove(watch)
                watch.done.set_result((data.timestamp - watch.entered_at) / 1e9)


def entering(frame: Frame | type[Frame]) -> Pushed:
    """The first push of ``frame`` (or of a frame of that type): the pipeline's own source."""
    if isinstance(frame, type):
        return lambda data: isinstance(data.frame, frame)
    return lambda data: data.frame is frame


def leaving(kind: type[Frame]) -> Pushed:
    """A frame of ``kind`` pushed by the pipeline's last processor."""
    return lambda data: isinstance(data.frame, kind) and isinstance(data.destination, PipelineSink)


def into(processor: FrameProcessor, kind: type[Frame]) -> Pushed:
    return lambda data: data.destination is processor and isinstance(data.frame, kind)


def out_of(processor: FrameProcessor, kind: type[Frame]) -> Pushed:
    return lambda data: data.source is processor and isinstance(data.frame, kind)


@dataclass
class Memory:
    """One returning caller's memory, prefetched, and where calls are recorded."""

    prefix: str
    redis: Redis
    store: MemoryStore
    queue: AnalysisQueue
    caller: CallerIdentity
    loaded: CallerMemory

    def on(self, redis: Redis) -> Memory:
        """The same memory, reached through another client."""
        store = MemoryStore(redis, prefix=self.prefix)
        queue = AnalysisQueue(redis, prefix=self.prefix)
        return Memory(self.prefix, redis, store, queue, self.caller, self.loaded)

    def access(self, embedder: Embedder | None) -> MemoryAccess:
        """The process's memory as the bot holds it, on this store."""

        async def keep_open() -> None:  # the bench closes its clients itself
            return None

        runtime = MemoryRuntime(
            settings=MemorySettings(),
            redis=self.redis,
            store=self.store,
            pepper=PEPPER,
            _close=keep_open,
        )
        return MemoryAccess(runtime=runtime, queue=self.queue, embedder=embedder)

    async def prepared(self, call_id: str) -> PreparedCall:
        """The call as ``prepare_call`` leaves it once the line has rung: memory loaded."""

        async def prefetched() -> CallerMemory:
            return self.loaded

        task = asyncio.create_task(prefetched())
        await task
        origin = CallOrigin(transport="bench", caller=None, call_id=call_id)
        return PreparedCall(origin=origin, caller=self.caller, memory=task)


@dataclass
class BenchCall:
    """One running pipeline of a variant."""

    worker: PipelineWorker
    stopwatch: Stopwatch
    tts: FrameProcessor
    call: Call | None = None
    task: asyncio.Task[None] | None = None
    held: asyncio.Future[float] | None = field(default=None, repr=False)
    records: bool = False


def _settings() -> BotSettings:
    return BotSettings(
        RAPPORT_AGENT_ID=AGENT,
        RAPPORT_BUSINESS_NAME="Bella's Bakery",
        RAPPORT_AGENT_PURPOSE=PURPOSE,
    )


@dataclass
class Pieces:
    """What a hand-built variant puts on the baseline, at the places build_call puts it."""

    after_stt: list[FrameProcessor] = field(default_factory=list)
    before_llm: list[FrameProcessor] = field(default_factory=list)
    after_llm: list[FrameProcessor] = field(default_factory=list)
    at_end: list[FrameProcessor] = field(default_factory=list)
    on_stt: Callable[[FrameProcessor], None] | None = None
    observers: list[BaseObserver] = field(default_factory=list)
    turn_tracking: bool = False
    idle_timeout_s: float | None = None


def hand_built(pieces: Pieces) -> tuple[PipelineWorker, FrameProcessor]:
    """The text pipeline by hand, with ``pieces`` where Rapport's go.

    The worker is set up as build_call sets it up (metrics on, no turn tracking, no idle
    timeout), so that none of it is part of what a variant "adds".
    """
    user, assistant = LLMContextAggregatorPair(LLMContext())
    stt, tts = PassThrough(), TextTTS()
    if pieces.on_stt is not None:
        pieces.on_stt(stt)
    processors: list[FrameProcessor] = [
        stt,
        *pieces.after_stt,
        user,
        *pieces.before_llm,
        EchoLLM(),
        *pieces.after_llm,
        tts,
        assistant,
        *pieces.at_end,
    ]
    params = PipelineParams(enable_metrics=True, enable_usage_metrics=True)
    worker = PipelineWorker(
        Pipeline(processors),
        params=params,
        observers=pieces.observers,
        enable_rtvi=False,
        enable_turn_tracking=pieces.turn_tracking,
        idle_timeout_secs=pieces.idle_timeout_s,
    )
    return worker, tts


def four_pass_throughs() -> Pieces:
    return Pieces(
        after_stt=[PassThrough()],
        before_llm=[PassThrough()],
        after_llm=[PassThrough()],
        at_end=[PassThrough()],
    )


async def piece(name: str, memory: Memory, embedder: Embedder | None, call_id: str) -> Pieces:
    """The baseline plus one piece (see :data:`PIECES`), built as build_call builds it."""
    settings = _settings()
    if name.startswith("MemoryContextProcessor"):
        prepared = await memory.prepared(call_id)
        context = MemoryContextProcessor(
            memory=prepared.memory,
            prompt_template=TEMPLATE,
            opening=lambda _memory, _language: "Hello!",
            voices=settings.voices,
            embedder=embedder,
            params=MemoryContextProcessor.Params(purpose=PURPOSE),
        )
        return Pieces(before_llm=[context], on_stt=context.listen)
    if name == "ToolSilenceGuard":
        return Pieces(after_llm=[ToolSilenceGuard(ending_tools={"end_call"})])
    if name.startswith("EndOfCallProcessor"):
        meter = CallMeter(
            transport="bench",
            trust="verified",
            prices=load_prices(),
            stt_model=settings.stt_model,
            llm_model=settings.llm_model,
        )
        recorder = CallRecorder(
            store=memory.store,
            queue=memory.queue,
            caller=memory.caller,
            call_id=call_id,
            report=meter.report,
        )
        ending = EndOfCallProcessor(recorder=recorder, watch=meter.frame_reached_end)
        return Pieces(at_end=[ending])
    if name.startswith("CallLanguage"):
        language = CallLanguage(voices={}, language="en")
        return Pieces(on_stt=language.follow)
    if name.startswith("a do-nothing processor"):
        return Pieces(before_llm=[PassThrough(direct="direct mode" in name)])
    if name.startswith("a do-nothing observer"):
        return Pieces(observers=[BaseObserver()])
    if name.startswith("Pipecat's turn-tracking"):
        return Pieces(turn_tracking=True)
    return Pieces(idle_timeout_s=_settings().idle_timeout_s)


async def build(variant: str, memory: Memory, embedder: Embedder | None, call_id: str) -> BenchCall:
    """The pipeline of ``variant``: ``build_call``'s own for the Rapport variants."""
    stopwatch = Stopwatch()
    tts: FrameProcessor
    if variant in (LEXICAL, E5):
        tts = TextTTS()
        call = build_call(
            await memory.prepared(call_id),
            settings=_settings(),
            services=CallServices(stt=PassThrough(), llm=EchoLLM(), tts=tts),
            memory=memory.access(embedder),
            prompt_template=TEMPLATE,
        )
        call.worker.add_observer(stopwatch)
        records = call.recorder is not None
        return BenchCall(
            worker=call.worker, stopwatch=stopwatch, tts=tts, call=call, records=records
        )
    if variant == BASELINE:
        pieces = Pieces()
    elif variant == PASS:
        pieces = four_pass_throughs()
    else:
        pieces = await piece(variant, memory, embedder, call_id)
    worker, tts = hand_built(pieces)
    worker.add_observer(stopwatch)
    records = any(isinstance(p, EndOfCallProcessor) for p in pieces.at_end)
    return BenchCall(worker=worker, stopwatch=stopwatch, tts=tts, records=records)


async def start(call: BenchCall) -> float:
    """Run the call; the time from its start until the opening line reaches the TTS."""
    watch = call.stopwatch
    opened = watch.expect(entering(StartFrame), into(call.tts, TTSSpeakFrame))
    if call.call is not None:
        memory_context = call.call.memory_context
        call.held = watch.expect(
            into(memory_context, StartFrame), out_of(memory_context, LLMUpdateSettingsFrame)
        )
        call.task = asyncio.create_task(call.call.run())
        await asyncio.wait_for(call.call.open(), 10)
    else:
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(call.worker)
        call.task = asyncio.create_task(runner.run())
        await call.worker.queue_frame(TTSSpeakFrame("Hello!"))  # a greeting without memory
    return await asyncio.wait_for(opened, 10)


async def stop(call: BenchCall) -> None:
    await call.worker.cancel(reason="benchmark")
    if call.task is not None:
        await asyncio.wait_for(call.task, 10)


async def turn(call: BenchCall, text: str) -> float:
    """One caller turn: transcription in, until the assistant's turn leaves the pipeline."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    said = TranscriptionFrame(text, "caller", stamp)
    done = call.stopwatch.expect(entering(said), leaving(LLMContextAssistantTurnFrame))
    await call.worker.queue_frame(said)
    return await asyncio.wait_for(done, 10)


async def transit(call: BenchCall) -> float:
    """One data frame from entering the pipeline to leaving it."""
    probe = ProbeFrame()
    arrived = call.stopwatch.expect(entering(probe), leaving(ProbeFrame))
    await call.worker.queue_frame(probe)
    return await asyncio.wait_for(arrived, 10)


async def interleaved(
    calls: dict[str, BenchCall], rounds: int, sample: Callable[[BenchCall, int], Any]
) -> dict[str, list[float]]:
    """``rounds`` samples per call, taking turns so noise hits every call alike.

    Each round takes the calls in a new order: a recording call's writes land during the calls
    after it, and a fixed order would spare the same calls every round. The first ``WARM_UP``
    rounds (first runs of code paths, caches) are not kept.
    """
    samples: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    shuffle = random.Random(11).shuffle
    for i in range(WARM_UP + rounds):
        shuffle(order)
        for name in order:
            value = await sample(calls[name], i)
            if i >= WARM_UP:
                samples[name].append(value)
    return samples


async def call_starts(
    memories: dict[str, Memory], embedders: dict[str, Embedder | None], starts: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Call starts, one variant after the other, each on a quiet process.

    A call leaves background work behind (its recorder closing the call, its recall index
    being built in a thread); the next start waits for it to settle, so each start is
    measured on its own rather than against the previous call's leftovers.

    Returns:
        Start to the opening line at the TTS per variant (s), and for the Rapport variants
        the time the memory processor held the start (ms).
    """
    samples: dict[str, list[float]] = {}
    held: dict[str, list[float]] = {}
    for name, memory in memories.items():
        samples[name] = []
        for i in range(WARM_UP + starts):
            call = await build(name, memory, embedders[name], f"start-{name}-{i}")
            opened = await start(call)
            held_s = await asyncio.wait_for(call.held, 10) if call.held is not None else None
            await stop(call)
            await CallRecorder.drain_all()
            await asyncio.sleep(SETTLE_S)
            if i < WARM_UP:
                continue
            samples[name].append(opened)
            if held_s is not None:
                held.setdefault(name, []).append(held_s * 1000)
    return samples, held


# -- metrics collection ----------------------------------------------------------------------


class TurnFrames(BaseObserver):
    """Keeps every frame that leaves the pipeline's last processor, turn by turn."""

    def __init__(self) -> None:
        super().__init__()
        self.pushes: list[FramePushed] = []

    async def on_push_frame(self, data: FramePushed) -> None:
        if isinstance(data.destination, PipelineSink):
            self.pushes.append(data)


class MeteredSTT(STTService):
    """An STT the call report's meter knows by name (it only names the metrics here)."""

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        yield None


class MeteredTTS(TTSService):
    """A TTS the call report's meter knows by name (it only names the metrics here)."""

    def __init__(self) -> None:
        super().__init__(settings=TTSSettings(model=None, voice=None, language=None))

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        yield None


def voice_turn(
    template: FramePushed, at: int, services: Sequence[FrameProcessor]
) -> list[FramePushed]:
    """The frames a voice turn adds to a text one: VAD stop, the services' metrics, bot audio.

    ``services`` are the STT, the LLM and the TTS, whose names the metrics carry.
    """
    stt, llm, tts = (service.name for service in services)
    usage = LLMTokenUsage(prompt_tokens=900, completion_tokens=30, total_tokens=930)
    frames: list[Frame] = [
        VADUserStoppedSpeakingFrame(stop_secs=0.2),
        MetricsFrame(data=[TTFBMetricsData(processor=stt, value=0.05)]),
        MetricsFrame(data=[TTFBMetricsData(processor=llm, value=0.3)]),
        MetricsFrame(data=[LLMUsageMetricsData(processor=llm, value=usage)]),
        MetricsFrame(data=[TTFBMetricsData(processor=tts, value=0.1)]),
        MetricsFrame(data=[TTSUsageMetricsData(processor=tts, value=40)]),
        BotStartedSpeakingFrame(),
    ]
    return [
        FramePushed(
            source=template.source,
            destination=template.destination,
            frame=frame,
            direction=FrameDirection.DOWNSTREAM,
            timestamp=at + i * 1_000_000,
        )
        for i, frame in enumerate(frames)
    ]


async def metrics_collection(memory: Memory, turns: int) -> list[float]:
    """Seconds the call report's meter spends on each turn's frames (see the docstring)."""
    services = (MeteredSTT(), EchoLLM(), MeteredTTS())
    call = await build(LEXICAL, memory, None, "call-metrics")
    recorded = TurnFrames()
    call.worker.add_observer(recorded)
    await start(call)
    per_turn: list[list[FramePushed]] = []
    try:
        for i in range(WARM_UP + turns):
            recorded.pushes = []
            await turn(call, QUESTIONS[i % 4])
            pushes = recorded.pushes
            per_turn.append(pushes + voice_turn(pushes[0], pushes[-1].timestamp, services))
    finally:
        await stop(call)
    meter = CallMeter(
        transport="bench",
        trust="verified",
        prices=load_prices(),
        stt_model="nova-3",
        llm_model="claude-haiku-4-5",
        services=services,
        memory=MemoryStats(),
    )
    samples = []
    for pushes in per_turn:
        began = time.perf_counter()
        for data in pushes:
            meter.frame_reached_end(data.frame, data.direction)
        samples.append(time.perf_counter() - began)
    meter.report()  # and it still reports
    return samples[WARM_UP:]


# -- dense recall in time ----------------------------------------------------------------------


async def speech(memory: Memory, embedder: Embedder, turns: int) -> dict[str, Any]:
    """A call with E5 in which the caller speaks: interim transcripts at speech pace, then the
    final one (see the module's docstring); how many turns had their words' vector in time."""
    call = await build(E5, memory, embedder, "call-speech")
    assert call.call is not None
    stats = call.call.memory_context.stats
    jitter = random.Random(7)
    await start(call)
    kinds = ("same words", "last word lagged", "last word revised")
    in_time: dict[str, list[tuple[bool, bool]]] = {kind: [] for kind in kinds}
    try:
        for i in range(turns):
            words = SPOKEN[i % len(SPOKEN)].split()
            draw = jitter.random()
            kind = kinds[0]
            if draw < LAGGED_SHARE:
                kind = kinds[1]
            elif draw < LAGGED_SHARE + REVISED_SHARE:
                kind = kinds[2]
            shown = len(words) - 1 if kind == kinds[1] else len(words)
            for count in range(1, shown + 1):
                heard = " ".join(words[:count])
                await call.worker.queue_frame(InterimTranscriptionFrame(heard, "caller", "now"))
                await asyncio.sleep(WORD_S * jitter.uniform(0.5, 1.5))
            if kind == kinds[2]:
                words[-1] = "please"  # the final transcript heard the last word otherwise
            await asyncio.sleep(FINAL_AFTER_S)
            own, so_far = stats.dense_used, stats.dense_heard_so_far
            await turn(call, " ".join(words))
            in_time[kind].append((stats.dense_used > own, stats.dense_heard_so_far > so_far))
    finally:
        await stop(call)
    every = [turn for kind in kinds for turn in in_time[kind]]
    return {
        "turns": turns,
        "dense_in_time": sum(own or so_far for own, so_far in every),
        "dense_in_time_share": sum(own or so_far for own, so_far in every) / len(every),
        "own_words_share": sum(own for own, _ in every) / len(every),
        "by_kind": {
            kind: {
                "turns": len(results),
                "own_words": sum(own for own, _ in results),
                "heard_so_far": sum(so_far for _, so_far in results),
            }
            for kind, results in in_time.items()
        },
        "recall_ms": median_p99(stats.recall_s),
        "budget_ms": _settings().recall_budget_ms,
    }


# -- Redis -------------------------------------------------------------------------------------


async def seed(redis: Redis, prefix: str, embedder: Embedder | None) -> Memory:
    """A returning caller with ten facts, ten exchanges and one earlier call."""
    store, queue = MemoryStore(redis, prefix=prefix), AnalysisQueue(redis, prefix=prefix)
    caller = identify("+14155550123", agent_id=AGENT, pepper=PEPPER)
    assert caller is not None
    facts = [Fact(text=text, confidence=0.9) for text in FACTS]
    if embedder is not None:
        facts = await asyncio.to_thread(with_embeddings, facts, embedder)
    await store.upsert_facts(caller, facts)
    await store.set_name(caller, "Ana")
    for i in range(10):
        for role, text in (("user", QUESTIONS[i % 4]), ("assistant", "Yes, we do.")):
            await store.append_turn(caller, Turn(role=role, text=text, call_id="earlier"))
    await store.close_call(caller, CallRecord(call_id="earlier", agent_id=AGENT))
    return Memory(prefix, redis, store, queue, caller, await store.load(caller))


async def commands_processed(redis: Redis) -> int:
    return int((await redis.info("stats"))["total_commands_processed"])


@asynccontextmanager
async def delayed_proxy(target: str, delay: float) -> AsyncIterator[str]:
    """A TCP proxy to the Redis at ``target`` adding ``delay`` to every request; yields its URL."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lag: float) -> None:
        try:
            while data := await reader.read(65536):
                if lag:
                    await asyncio.sleep(lag)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if target.startswith("unix://"):
            return await asyncio.open_unix_connection(target.removeprefix("unix://").split("?")[0])
        host, _, port = target.split("//", 1)[1].split("/")[0].rpartition(":")
        return await asyncio.open_connection(host.split("@")[-1], int(port))

    tasks: set[asyncio.Task[None]] = set()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await connect()
        for task in (pipe(client_r, server_w, delay), pipe(server_r, client_w, 0.0)):
            tasks.add(asyncio.create_task(task))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- the run -----------------------------------------------------------------------------------


def median_p99(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"median": statistics.median(ordered) * 1000, "p99": p99 * 1000}


def added(stats: dict[str, dict[str, float]], name: str) -> dict[str, float]:
    return {q: stats[name][q] - stats[BASELINE][q] for q in ("median", "p99")}


async def measure(args: argparse.Namespace, redis: Redis, redis_url: str) -> dict[str, Any]:
    load_before = os.getloadavg()
    e5 = default_embedder()
    await asyncio.to_thread(e5.embed_query, ["warm-up"])
    embedders: dict[str, Embedder | None] = {BASELINE: None, PASS: None, LEXICAL: None, E5: e5}
    memories = {
        name: await seed(redis, f"bench-overhead-{os.getpid()}-{i}", embedder)
        for i, (name, embedder) in enumerate(embedders.items())
    }

    for name in PIECES:
        dense = "E5" in name
        memories[name] = memories[E5 if dense else LEXICAL]
        embedders[name] = e5 if dense else None

    freeze_startup_objects()  # as the bot does once started
    starts, held = await call_starts(
        {name: memories[name] for name in VARIANTS}, embedders, args.starts
    )
    calls = {
        name: await build(name, memories[name], embedders[name], f"call-{i}")
        for i, name in enumerate(memories)
    }
    recording = sum(1 for call in calls.values() if call.records)
    for call in calls.values():
        await start(call)
    try:
        main = {name: calls[name] for name in VARIANTS}
        frames = await interleaved(main, args.frames, lambda call, _: transit(call))
        before = await commands_processed(redis)
        turns = await interleaved(calls, args.turns, lambda call, i: turn(call, QUESTIONS[i % 4]))
        await asyncio.sleep(0.5)  # the recorders' writes, off the frame path, land meanwhile
        commands = await commands_processed(redis) - before
    finally:
        for call in calls.values():
            await stop(call)
    spoken = await speech(memories[E5], e5, args.speech_turns)
    collection = await metrics_collection(memories[LEXICAL], args.turns)
    # The lexical variant again, every Redis round trip 5 ms slower.
    async with delayed_proxy(redis_url, PROXY_DELAY_S) as slow_url:
        slow_redis, close = await open_redis(
            redis_url=slow_url, data_dir=Path("."), connect_timeout=2.0, command_timeout=5.0
        )
        try:
            memory = memories[LEXICAL]
            pair = {
                "direct": await build(LEXICAL, memory, None, "call-direct"),
                "slow": await build(LEXICAL, memory.on(slow_redis), None, "call-slow"),
            }
            for call in pair.values():
                await start(call)
            try:
                rtt = await interleaved(
                    pair, args.turns, lambda call, i: turn(call, QUESTIONS[i % 4])
                )
            finally:
                for call in pair.values():
                    await stop(call)
            await CallRecorder.drain_all()
        finally:
            await close()
    await CallRecorder.drain_all()

    frame_stats = {name: median_p99(s) for name, s in frames.items()}
    turn_stats = {name: median_p99(s) for name, s in turns.items()}
    start_stats = {name: median_p99(s) for name, s in starts.items()}
    slowdown = statistics.median(rtt["slow"]) - statistics.median(rtt["direct"])
    recorded_turns = recording * args.turns * 2  # a user and a bot turn each
    return {
        "turns": args.turns,
        "frames": args.frames,
        "starts": args.starts,
        "frame_transit_ms": frame_stats,
        "frame_overhead_ms": {name: added(frame_stats, name) for name in ADDED},
        "turn_ms": turn_stats,
        "turn_overhead_ms": {name: added(turn_stats, name) for name in ADDED},
        "start_to_opening_ms": start_stats,
        "start_overhead_ms": {name: added(start_stats, name) for name in ADDED},
        "memory_processor_start_ms": {
            name: median_p99([ms / 1000 for ms in values]) for name, values in held.items()
        },
        "metrics_collection_per_turn_ms": median_p99(collection),
        "redis_commands_per_turn": commands / (recorded_turns / 2),
        "redis_commands_per_recorded_utterance": commands / recorded_turns,
        "frame_path_round_trips_per_turn": max(0.0, slowdown / PROXY_DELAY_S),
        "turn_slowdown_with_5ms_redis_ms": slowdown * 1000,
        "rapport_minus_pass_throughs_turn_median_ms": {
            name: turn_stats[name]["median"] - turn_stats[PASS]["median"] for name in (LEXICAL, E5)
        },
        "piece_turn_added_median_ms": {
            name: turn_stats[name]["median"] - turn_stats[BASELINE]["median"] for name in PIECES
        },
        "dense_recall_speech": spoken,
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = os.environ.get("REDIS_URL")
    with tempfile.TemporaryDirectory(prefix="rapport-bench-") as folder:
        redis, close = await open_redis(
            redis_url=url, data_dir=Path(folder), connect_timeout=2.0, command_timeout=5.0
        )
        try:
            target = url or redis.connection_pool.connection_kwargs.get("path", "")
            target = target if "://" in target else f"unix://{target}"
            return await measure(args, redis, target)
        finally:
            await close()


def _row(table: Table, label: str, stats: dict[str, dict[str, float]], key: str) -> None:
    table.add_row(label, *(f"{stats[name][key]:.3f}" for name in VARIANTS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--starts", type=int, default=100)
    parser.add_argument("--speech-turns", type=int, default=80)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    logger.remove()
    logger.add(lambda message: None, level="ERROR")
    result = report.run(run(args))
    if args.json:
        print(json.dumps(result))
        return
    table = Table(title="Pipeline overhead of the Rapport processors (ms)")
    for column in ("", *VARIANTS):
        table.add_column(column, justify="right" if column else "left")
    _row(table, "frame transit, median", result["frame_transit_ms"], "median")
    _row(table, "frame transit, p99", result["frame_transit_ms"], "p99")
    _row(table, "turn, median", result["turn_ms"], "median")
    _row(table, "turn, p99", result["turn_ms"], "p99")
    _row(table, "start → opening at the TTS, median", result["start_to_opening_ms"], "median")
    _row(table, "start → opening at the TTS, p99", result["start_to_opening_ms"], "p99")
    for label, key in (
        ("added per frame", "frame_overhead_ms"),
        ("added per turn", "turn_overhead_ms"),
        ("added at call start", "start_overhead_ms"),
    ):
        over = result[key]
        table.add_row(
            f"{label}, median / p99",
            "",
            *(f"{over[name]['median']:.3f} / {over[name]['p99']:.3f}" for name in ADDED),
        )
    collection = result["metrics_collection_per_turn_ms"]
    table.add_row(
        "call report: metrics collection per turn, median / p99",
        "",
        "",
        f"{collection['median']:.4f} / {collection['p99']:.4f}",
        "",
    )
    console = Console()
    console.print(table)
    pieces = Table(title="What each piece adds to a text turn on the baseline (ms, median)")
    for column in ("piece", "in build_call", "added per turn"):
        pieces.add_column(column, justify="left" if column == "piece" else "right")
    for name, in_call in PIECES.items():
        added_ms = result["piece_turn_added_median_ms"][name]
        pieces.add_row(name, "yes" if in_call else "no", f"{added_ms:.3f}")
    console.print(pieces)
    versus = result["rapport_minus_pass_throughs_turn_median_ms"]
    print(
        "build_call's pipeline minus four do-nothing processors, turn median: "
        + "; ".join(f"{name} {ms:+.3f} ms" for name, ms in versus.items())
    )
    spoken = result["dense_recall_speech"]
    print(
        f"dense recall in time (E5, {spoken['budget_ms']:.0f} ms budget, caller speaking): "
        f"{spoken['dense_in_time']} of {spoken['turns']} turns "
        f"({spoken['dense_in_time_share']:.1%}; with their own words' vector "
        f"{spoken['own_words_share']:.1%}); time in recall per turn, median / p99: "
        f"{spoken['recall_ms']['median']:.2f} / {spoken['recall_ms']['p99']:.2f} ms"
    )
    for kind, counts in spoken["by_kind"].items():
        print(
            f"  {kind}: {counts['turns']} turns, {counts['own_words']} with their own words' "
            f"vector, {counts['heard_so_far']} with the words heard so far"
        )
    load = result["load_average"]
    print(f"load average (1 min) before / after: {load['before'][0]:.2f} / {load['after'][0]:.2f}")
    print(f"event loop: {report.EVENT_LOOP} (the bot's)")
    held = result["memory_processor_start_ms"]
    print(
        "call start held by the memory processor (StartFrame in -> system prompt out), "
        "median / p99: "
        + "; ".join(f"{name} {v['median']:.3f} / {v['p99']:.3f} ms" for name, v in held.items())
    )
    print(
        f"Redis commands per turn (recorder, off the frame path): "
        f"{result['redis_commands_per_turn']:.1f}; round trips on the frame path per turn: "
        f"{result['frame_path_round_trips_per_turn']:.2f} (turn slowed by "
        f"{result['turn_slowdown_with_5ms_redis_ms']:.3f} ms with 5 ms added to every Redis "
        "round trip)"
    )


if __name__ == "__main__":
    main()
