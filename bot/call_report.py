"""The call's report, measured from its own frames by a Pipecat observer, off the frame path.

:class:`CallReportObserver` is given to the call's ``PipelineWorker``. Pipecat hands observers
each frame on their own task (``WorkerObserver`` queues them), so nothing here delays a frame;
every time is taken from the pipeline clock stamp of the frame's first push, not from when the
observer sees it. It measures:

- pickup to first audio: ``StartFrame`` to the first ``BotStartedSpeakingFrame``;
- voice to voice, per turn: the caller stopped speaking (``VADUserStoppedSpeakingFrame``, its
  ``stop_secs`` of silence taken back, or else ``UserStoppedSpeakingFrame``) to the next
  ``BotStartedSpeakingFrame``;
- the services' ``MetricsFrame``s: TTFB of the STT, LLM and TTS, LLM tokens, TTS characters,
  STT audio seconds;
- errors reported by the services (``ErrorFrame``), also counted per service and kind in
  ``rapport_service_errors_total`` (:mod:`memory.upstream`); a service's TTFB shows it answered.

:meth:`CallReportObserver.report` builds the priced :class:`~memory.report.CallReport` when the
call closes; :meth:`CallReportObserver.finish` adds the call to the Prometheus metrics.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    CancelFrame,
    EndFrame,
    ErrorFrame,
    MetricsFrame,
    StartFrame,
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
from pipecat.observers.base_observer import BaseObserver, FramePushed
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


class CallReportObserver(BaseObserver):
    """Measures one call from its frames and builds its report.

    Args:
        transport: The call's transport (a metrics label).
        trust: The caller's trust level (a metrics label).
        prices: What the call's usage is priced at.
        stt_model: The STT model, as the price table names it.
        llm_model: The LLM model.
        tts_model: The TTS, as the price table names it.
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
        memory: MemoryStats | None = None,
        load_budget_s: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(observe_every_push=False, **kwargs)
        self._transport = transport
        self._trust = trust
        self._prices = prices
        self._memory = memory
        self._load_budget_s = load_budget_s
        self._usage = Usage(stt_model=stt_model, llm_model=llm_model, tts_model=tts_model)
        self._started_ns: int | None = None
        self._started_at = time.monotonic()
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
        self._handlers: dict[type, Callable[[Any, FramePushed], None]] = {
            MetricsFrame: self._on_metrics,
            BotStartedSpeakingFrame: self._on_bot_speaking,
            UserStoppedSpeakingFrame: self._on_caller_stopped,
            VADUserStoppedSpeakingFrame: self._on_caller_stopped,
            UserStartedSpeakingFrame: self._on_caller_started,
            VADUserStartedSpeakingFrame: self._on_caller_started,
            ErrorFrame: self._on_error,
            StartFrame: self._on_start,
            EndFrame: self._on_end,
            CancelFrame: self._on_end,
        }

    async def on_push_frame(self, data: FramePushed) -> None:
        """Note what the frame tells about the call (most frames: one dictionary miss)."""
        handler = self._handlers.get(type(data.frame))
        if handler is not None:
            handler(data.frame, data)

    # -- frames ------------------------------------------------------------------------------

    def _on_start(self, _frame: StartFrame, data: FramePushed) -> None:
        if self._started_ns is None:
            self._started_ns = data.timestamp
            self._started_at = time.monotonic()

    def _on_end(self, frame: EndFrame | CancelFrame, data: FramePushed) -> None:
        if self._ended_ns is None:
            self._ended_ns = data.timestamp
            if self._outcome != "error":
                self._outcome = "ended" if isinstance(frame, EndFrame) else "cancelled"

    def _on_caller_started(self, _frame: Any, _data: FramePushed) -> None:
        self._caller_stopped_ns = None  # the caller speaks on: the turn is not over yet

    def _on_caller_stopped(
        self, frame: UserStoppedSpeakingFrame | VADUserStoppedSpeakingFrame, data: FramePushed
    ) -> None:
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            # The VAD reports the stop once it has heard stop_secs of silence.
            self._caller_stopped_ns = data.timestamp - int(frame.stop_secs * 1e9)
        elif self._caller_stopped_ns is None:
            self._caller_stopped_ns = data.timestamp
        if self._turn is None:
            self._turn = TurnTiming()

    def _on_bot_speaking(self, _frame: BotStartedSpeakingFrame, data: FramePushed) -> None:
        if data.direction != FrameDirection.DOWNSTREAM:
            return  # the output transport sends one each way
        if self._first_audio_ns is None:
            self._first_audio_ns = data.timestamp
        turn, stopped = self._turn, self._caller_stopped_ns
        if turn is None or stopped is None:
            return
        latency_s = max(0.0, (data.timestamp - stopped) * _NS)
        turn.voice_to_voice_ms = round(latency_s * 1000, 2)
        VOICE_TO_VOICE.observe(latency_s)
        self._turns.append(turn)
        self._turn = None
        self._caller_stopped_ns = None

    def _on_metrics(self, frame: MetricsFrame, data: FramePushed) -> None:
        kind = service_kind(data.source)
        for item in frame.data:
            if isinstance(item, TTFBMetricsData) and kind is not None and item.value > 0:
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

    def _on_error(self, frame: ErrorFrame, data: FramePushed) -> None:
        kind = service_kind(frame.processor or data.source)
        if kind is not None and frame.category is not ErrorCategory.APPLICATION:
            self._errors[kind] += 1
            UPSTREAM.failed(Service(kind), error_kind(frame))
        if frame.fatal:
            self._outcome = "error"

    # -- the report --------------------------------------------------------------------------

    def report(self) -> CallReport:
        """The call's report so far, priced (called once the call has closed)."""
        if self._started_ns is not None and self._ended_ns is not None:
            duration = (self._ended_ns - self._started_ns) * _NS
        else:
            duration = time.monotonic() - self._started_at
        # Streaming STT bills the whole stream: without Pipecat's STT usage, the call's length.
        usage = self._usage.model_copy(
            update={"stt_audio_seconds": round(self._stt_seconds or duration, 3)}
        )
        pickup = None
        if self._started_ns is not None and self._first_audio_ns is not None:
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
