"""The call's report, measured from the frames that reach the end of the call's pipeline.

:class:`CallMeter` watches no frame of its own: an observer would be handed every frame of the
call, each through a queue and a task switch of its own. It reads the few frames it needs where
they pass anyway. ``EndOfCallProcessor``, the pipeline's last processor, hands it each frame
that reaches the end (one dictionary miss for most), and the worker's ``on_pipeline_error``
event reports the errors, which travel upstream. Times are the process's monotonic clock when a
frame reaches the end; the frames it times are system frames, which skip the queues on the way.
It measures:

- pickup to first audio: the pipeline's start (:meth:`CallMeter.start`) to the first
  ``BotStartedSpeakingFrame``;
- voice to voice, per turn: the caller stopped speaking (``VADUserStoppedSpeakingFrame``, its
  ``stop_secs`` of silence taken back, or else ``UserStoppedSpeakingFrame``) to the next
  ``BotStartedSpeakingFrame``;
- the services' ``MetricsFrame``s: TTFB of the STT, LLM and TTS, LLM tokens, TTS characters,
  STT audio seconds;
- errors reported by the services (``ErrorFrame``), also counted per service and kind in
  ``rapport_service_errors_total`` (:mod:`memory.upstream`); a service's TTFB shows it answered.

:meth:`CallMeter.report` builds the priced :class:`~memory.report.CallReport` when the call
closes; :meth:`CallMeter.finish` adds the call to the Prometheus metrics.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    MetricsFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import (
    LLMUsageMetricsData,
    STTUsageMetricsData,
    TTFBMetricsData,
    TTSUsageMetricsData,
)
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import STTService
from pipecat.services.tts_service import TTSService
from pipecat.utils.errors import ErrorCategory

from memory.metrics import CALLS, MEMORY_LOAD, RECALL, VOICE_TO_VOICE
from memory.recall.turns import MemoryStats
from memory.report import (
    CallCost,
    CallReport,
    Latency,
    MemoryTimings,
    PriceTable,
    TurnTiming,
    Usage,
    price,
)
from memory.upstream import UPSTREAM, FailureKind, Service, failure_kind

#: The Azure neural voices' entry in the price table.
AZURE_NEURAL = "azure-neural"

_NS = 1e-9

_Handler = Callable[[Any, int], None]


def service_kind(processor: FrameProcessor | None) -> str | None:
    """``stt``, ``llm`` or ``tts`` for a call's service; None for anything else."""
    if isinstance(processor, STTService):
        return "stt"
    if isinstance(processor, LLMService):
        return "llm"
    if isinstance(processor, TTSService):
        return "tts"
    return None


_KINDS = {
    ErrorCategory.AUTHENTICATION: FailureKind.AUTH,
    ErrorCategory.AUTHORIZATION: FailureKind.AUTH,
    ErrorCategory.RATE_LIMIT: FailureKind.RATE_LIMITED,
    ErrorCategory.CONNECTIVITY: FailureKind.UNREACHABLE,
}
#: Azure's speech SDK reports a refused key only in its cancellation text:
#: "WebSocket upgrade failed: Authentication error (401). Please check subscription ...".
_REFUSED_TEXT = re.compile(r"\((401|403)\)")


def error_kind(frame: ErrorFrame) -> FailureKind:
    """Why a service failed, from Pipecat's category, the exception, or Azure's text."""
    if frame.category in _KINDS:
        return _KINDS[frame.category]
    if frame.exception is not None and (kind := failure_kind(frame.exception)) is not (
        FailureKind.OTHER
    ):
        return kind
    return FailureKind.AUTH if _REFUSED_TEXT.search(frame.error) else FailureKind.OTHER


class CallMeter:
    """Measures one call from the frames reaching the end of its pipeline; builds its report.

    Args:
        transport: The call's transport (a metrics label).
        trust: The caller's trust level (a metrics label).
        prices: What the call's usage is priced at.
        stt_model: The STT model, as the price table names it.
        llm_model: The LLM model.
        tts_model: The TTS, as the price table names it.
        services: The call's STT, LLM and TTS: their metrics are told apart by their names.
        memory: The memory processor's stats (None with memory off).
        load_budget_s: The memory load budget, reported beside the load time.
    """

    def __init__(
        self,
        *,
        transport: str,
        trust: str,
        prices: PriceTable,
        stt_model: str,
        llm_model: str,
        tts_model: str = AZURE_NEURAL,
        services: Iterable[FrameProcessor] = (),
        memory: MemoryStats | None = None,
        load_budget_s: float | None = None,
    ) -> None:
        self._transport = transport
        self._trust = trust
        self._prices = prices
        self._kinds = {p.name: kind for p in services if (kind := service_kind(p)) is not None}
        self._memory = memory
        self._load_budget_s = load_budget_s
        self._usage = Usage(stt_model=stt_model, llm_model=llm_model, tts_model=tts_model)
        self._started_ns = time.monotonic_ns()
        self._ended_ns: int | None = None
        self._first_audio_ns: int | None = None
        self._caller_stopped_ns: int | None = None
        self._turn: TurnTiming | None = None
        self._turns: list[TurnTiming] = []
        self._ttfb: dict[str, list[float]] = {"stt": [], "llm": [], "tts": []}
        self._stt_seconds = 0.0
        self._errors: Counter[str] = Counter()
        self._outcome = "cancelled"
        self._finished = False
        self._handlers: dict[type, _Handler] = {
            MetricsFrame: self._on_metrics,
            BotStartedSpeakingFrame: self._on_bot_speaking,
            UserStoppedSpeakingFrame: self._on_caller_stopped,
            VADUserStoppedSpeakingFrame: self._on_caller_stopped,
            UserStartedSpeakingFrame: self._on_caller_started,
            VADUserStartedSpeakingFrame: self._on_caller_started,
            EndFrame: self._on_end,
            CancelFrame: self._on_end,
        }

    def attach(self, worker: PipelineWorker) -> None:
        """Count the errors the call's services report (upstream, to the worker)."""
        worker.add_event_handler("on_pipeline_error", self._on_error)

    def start(self) -> None:
        """The pipeline starts now: the caller is on the line (pickup and duration run from it)."""
        self._started_ns = time.monotonic_ns()

    def frame_reached_end(self, frame: Frame, direction: FrameDirection) -> None:
        """Note what a frame at the pipeline's end tells about the call (most: one miss)."""
        handler = self._handlers.get(type(frame))
        if handler is not None and direction == FrameDirection.DOWNSTREAM:
            handler(frame, time.monotonic_ns())

    # -- frames ------------------------------------------------------------------------------

    def _on_end(self, frame: EndFrame | CancelFrame, at: int) -> None:
        if self._ended_ns is None:
            self._ended_ns = at
            if self._outcome != "error":
                self._outcome = "ended" if isinstance(frame, EndFrame) else "cancelled"

    def _on_caller_started(self, _frame: Frame, _at: int) -> None:
        self._caller_stopped_ns = None  # the caller speaks on: the turn is not over yet

    def _on_caller_stopped(
        self, frame: UserStoppedSpeakingFrame | VADUserStoppedSpeakingFrame, at: int
    ) -> None:
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            # The VAD reports the stop once it has heard stop_secs of silence.
            self._caller_stopped_ns = at - int(frame.stop_secs * 1e9)
        elif self._caller_stopped_ns is None:
            self._caller_stopped_ns = at
        if self._turn is None:
            self._turn = TurnTiming()

    def _on_bot_speaking(self, _frame: BotStartedSpeakingFrame, at: int) -> None:
        if self._first_audio_ns is None:
            self._first_audio_ns = at
        turn, stopped = self._turn, self._caller_stopped_ns
        if turn is None or stopped is None:
            return
        latency_s = max(0.0, (at - stopped) * _NS)
        turn.voice_to_voice_ms = round(latency_s * 1000, 2)
        VOICE_TO_VOICE.observe(latency_s)
        self._turns.append(turn)
        self._turn = None
        self._caller_stopped_ns = None

    def _on_metrics(self, frame: MetricsFrame, _at: int) -> None:
        for item in frame.data:
            if isinstance(item, TTFBMetricsData) and item.value > 0:
                kind = self._kinds.get(item.processor)
                if kind is None:
                    continue
                UPSTREAM.succeeded(Service(kind))  # it answered: a refused key is past
                ms = round(item.value * 1000, 2)
                self._ttfb[kind].append(ms)
                if self._turn is not None and getattr(self._turn, f"{kind}_ttfb_ms") is None:
                    setattr(self._turn, f"{kind}_ttfb_ms", ms)
            elif isinstance(item, LLMUsageMetricsData):
                tokens, usage = item.value, self._usage
                usage.llm_input_tokens += tokens.prompt_tokens
                usage.llm_output_tokens += tokens.completion_tokens
                usage.llm_cache_read_tokens += tokens.cache_read_input_tokens or 0
                usage.llm_cache_write_tokens += tokens.cache_creation_input_tokens or 0
                usage.llm_requests += 1
            elif isinstance(item, TTSUsageMetricsData):
                self._usage.tts_characters += item.value
            elif isinstance(item, STTUsageMetricsData):
                self._stt_seconds += item.value.audio_seconds

    async def _on_error(self, _worker: PipelineWorker, frame: ErrorFrame) -> None:
        kind = service_kind(frame.processor)
        if kind is not None and frame.category is not ErrorCategory.APPLICATION:
            self._errors[kind] += 1
            UPSTREAM.failed(Service(kind), error_kind(frame))
        if frame.fatal:
            self._outcome = "error"

    # -- the report --------------------------------------------------------------------------

    def report(self) -> CallReport:
        """The call's report so far, priced (called once the call has closed)."""
        ended_ns = self._ended_ns if self._ended_ns is not None else time.monotonic_ns()
        duration = (ended_ns - self._started_ns) * _NS
        # Streaming STT bills the whole stream: without Pipecat's STT usage, the call's length.
        usage = self._usage.model_copy(
            update={"stt_audio_seconds": round(self._stt_seconds or duration, 3)}
        )
        pickup = None
        if self._first_audio_ns is not None:
            pickup = round((self._first_audio_ns - self._started_ns) * _NS * 1000, 2)
        report = CallReport(
            duration_s=round(duration, 3),
            pickup_to_first_audio_ms=pickup,
            turns=[turn.model_copy() for turn in self._turns],
            voice_to_voice=Latency.of(
                [t.voice_to_voice_ms for t in self._turns if t.voice_to_voice_ms is not None]
            ),
            stt_ttfb=Latency.of(self._ttfb["stt"]),
            llm_ttfb=Latency.of(self._ttfb["llm"]),
            tts_ttfb=Latency.of(self._ttfb["tts"]),
            usage=usage,
            memory=self._memory_timings(),
            cost=CallCost(currency=self._prices.currency, prices_taken_on=self._prices.taken_on),
            errors=dict(self._errors),
        )
        return price(report, self._prices)

    def _memory_timings(self) -> MemoryTimings | None:
        stats = self._memory
        if stats is None:
            return None
        return MemoryTimings(
            load_ms=round(stats.load_s * 1000, 2) if stats.load_s is not None else None,
            load_budget_ms=(
                round(self._load_budget_s * 1000, 2) if self._load_budget_s is not None else None
            ),
            load_met_budget=stats.load_met_budget,
            recall=Latency.of([s * 1000 for s in stats.recall_s]),
            dense_recall_skipped=stats.dense_skipped,
        )

    def finish(self) -> None:
        """Count the ended call in the Prometheus metrics (once)."""
        if self._finished:
            return
        self._finished = True
        CALLS.labels(transport=self._transport, trust=self._trust, outcome=self._outcome).inc()
        stats = self._memory
        if stats is not None:
            if stats.load_s is not None:
                MEMORY_LOAD.observe(stats.load_s)
            for seconds in stats.recall_s:
                RECALL.observe(seconds)
