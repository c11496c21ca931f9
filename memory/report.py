"""What one call cost and how fast it was: the per-call report and the prices it is costed by.

The bot builds a :class:`CallReport` from the call's own frames when the call closes (see
``bot/call_report.py``) and stores it on the :class:`~memory.models.CallRecord`; the analysis
worker adds its own request's tokens (:meth:`CallReport.with_analysis`). Every cost is priced
from a :class:`PriceTable`: the list prices shipped in ``memory/prices.json`` (with the date
they were taken), or the file ``RAPPORT_PRICES_FILE`` names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, computed_field

#: The price table shipped with Rapport.
DEFAULT_PRICES = Path(__file__).with_name("prices.json")


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


# -- prices ------------------------------------------------------------------------------------


class STTPrice(_Record):
    """A streaming speech-to-text price (billed on the audio streamed, silence included)."""

    per_minute: float = Field(ge=0)


class LLMPrice(_Record):
    """An LLM's prices per million tokens."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cache_read_per_mtok: float = Field(default=0.0, ge=0)
    cache_write_per_mtok: float = Field(default=0.0, ge=0)


class TTSPrice(_Record):
    """A text-to-speech price per million characters."""

    per_million_characters: float = Field(ge=0)


class PriceTable(_Record):
    """Per-unit list prices of the services a call uses, in one currency.

    Keys are model names (``nova-3``, ``claude-haiku-4-5``, ``azure-neural``); an LLM model
    with a dated suffix (``claude-haiku-4-5-20251001``) is priced by the longest key it starts
    with.
    """

    currency: str = Field(min_length=3, max_length=3)
    taken_on: str
    source: str = ""
    stt: dict[str, STTPrice] = Field(default_factory=dict)
    llm: dict[str, LLMPrice] = Field(default_factory=dict)
    tts: dict[str, TTSPrice] = Field(default_factory=dict)

    def llm_price(self, model: str) -> LLMPrice | None:
        """The price of ``model``, by exact name or longest matching prefix."""
        matches = [key for key in self.llm if model == key or model.startswith(key + "-")]
        return self.llm[max(matches, key=len)] if matches else None


def load_prices(path: Path | None = None) -> PriceTable:
    """The price table at ``path`` (default: the one shipped), read once per path.

    Raises:
        OSError: The file cannot be read.
        pydantic.ValidationError: It is not a price table.
    """
    return _read_prices(path or DEFAULT_PRICES)


@cache
def _read_prices(path: Path) -> PriceTable:
    return PriceTable.model_validate_json(path.read_text(encoding="utf-8"))


# -- the report --------------------------------------------------------------------------------


class Latency(_Record):
    """A distribution of durations in milliseconds (all None when nothing was measured)."""

    count: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    max_ms: float | None = None

    @classmethod
    def of(cls, values_ms: Sequence[float]) -> Latency:
        """The distribution of ``values_ms``."""
        if not values_ms:
            return cls()
        return cls(
            count=len(values_ms),
            p50_ms=_ms(percentile(values_ms, 50)),
            p95_ms=_ms(percentile(values_ms, 95)),
            max_ms=_ms(max(values_ms)),
        )


class TurnTiming(_Record):
    """One exchange: the caller stops speaking, the bot answers.

    Attributes:
        voice_to_voice_ms: Caller stopped speaking (the VAD's stop, its silence window taken
            back) to the bot's first audio on the line.
        stt_ttfb_ms: The STT's time to the final transcript of the turn, as Pipecat measures it.
        llm_ttfb_ms: The LLM's time to its first token (the turn's first request).
        tts_ttfb_ms: The TTS's time to its first audio of the turn.
    """

    voice_to_voice_ms: float | None = None
    stt_ttfb_ms: float | None = None
    llm_ttfb_ms: float | None = None
    tts_ttfb_ms: float | None = None


class Usage(_Record):
    """What the call used of each billed service."""

    stt_model: str = ""
    llm_model: str = ""
    tts_model: str = ""
    #: Seconds of audio streamed to the STT (Pipecat's STT usage, else the call's length).
    stt_audio_seconds: float = 0.0
    llm_input_tokens: int = 0
    llm_output_tokens: int = 0
    llm_cache_read_tokens: int = 0
    llm_cache_write_tokens: int = 0
    llm_requests: int = 0
    tts_characters: int = 0


class AnalysisUsage(_Record):
    """The post-call analysis request's tokens (its successful attempt)."""

    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


class MemoryTimings(_Record):
    """How memory behaved on the call's path."""

    #: Call start to memory ready (None: nothing to load, e.g. memory off).
    load_ms: float | None = None
    load_budget_ms: float | None = None
    #: Whether the memory was ready within the budget (False: the call went on without it).
    load_met_budget: bool | None = None
    recall: Latency = Field(default_factory=Latency)
    #: Turns on which dense (embedding) recall was skipped to keep within the recall budget.
    dense_recall_skipped: int = 0


class CostLine(_Record):
    """One priced item: ``quantity`` of ``unit`` at ``unit_price``."""

    item: str
    quantity: float
    unit: str
    unit_price: float
    cost: float


class CallCost(_Record):
    """A call's cost, item by item, in one currency (unpriced items are named, cost 0)."""

    currency: str
    prices_taken_on: str
    lines: list[CostLine] = Field(default_factory=list)
    unpriced: list[str] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> float:
        """The sum of every line."""
        return round(sum(line.cost for line in self.lines), 6)


class CallReport(_Record):
    """How fast one call was, what it used, and what that cost.

    Attributes:
        duration_s: Pipeline start to end.
        pickup_to_first_audio_ms: Pipeline start (the caller is on the line) to the bot's first
            audio.
        turns: Each exchange, in order (the opening is not one).
        voice_to_voice / stt_ttfb / llm_ttfb / tts_ttfb: Their distributions over the turns.
        usage: Tokens, characters and audio seconds of the call itself.
        analysis: The post-call analysis request's tokens, once analysed.
        memory: Memory load and recall timings (None with memory off).
        cost: Every item priced, and the total (``cost.total``).
        errors: LLM, STT and TTS errors reported during the call, by service.
    """

    duration_s: float = 0.0
    pickup_to_first_audio_ms: float | None = None
    turns: list[TurnTiming] = Field(default_factory=list)
    voice_to_voice: Latency = Field(default_factory=Latency)
    stt_ttfb: Latency = Field(default_factory=Latency)
    llm_ttfb: Latency = Field(default_factory=Latency)
    tts_ttfb: Latency = Field(default_factory=Latency)
    usage: Usage = Field(default_factory=Usage)
    analysis: AnalysisUsage | None = None
    memory: MemoryTimings | None = None
    cost: CallCost
    errors: dict[str, int] = Field(default_factory=dict)

    def with_analysis(self, usage: AnalysisUsage, prices: PriceTable) -> CallReport:
        """The report with the analysis request's tokens added and priced."""
        return price(self.model_copy(update={"analysis": usage}), prices)


def price(report: CallReport, prices: PriceTable) -> CallReport:
    """``report`` with its cost computed from ``prices`` (any earlier cost replaced)."""
    usage = report.usage
    lines: list[CostLine] = []
    unpriced: list[str] = []
    stt = prices.stt.get(usage.stt_model)
    if stt is not None and usage.stt_audio_seconds:
        minutes = usage.stt_audio_seconds / 60
        lines.append(_line("stt", minutes, "minute", stt.per_minute))
    elif usage.stt_audio_seconds:
        unpriced.append(f"stt:{usage.stt_model}")
    llm = prices.llm_price(usage.llm_model)
    tokens = (
        usage.llm_input_tokens,
        usage.llm_output_tokens,
        usage.llm_cache_read_tokens,
        usage.llm_cache_write_tokens,
    )
    lines += _llm_lines("llm", llm, tokens, usage.llm_model, unpriced)
    tts = prices.tts.get(usage.tts_model)
    if tts is not None and usage.tts_characters:
        lines.append(
            _line(
                "tts", usage.tts_characters / 1e6, "million characters", tts.per_million_characters
            )
        )
    elif usage.tts_characters:
        unpriced.append(f"tts:{usage.tts_model}")
    if (analysis := report.analysis) is not None:
        tokens = (
            analysis.input_tokens,
            analysis.output_tokens,
            analysis.cache_read_tokens,
            analysis.cache_write_tokens,
        )
        lines += _llm_lines(
            "analysis", prices.llm_price(analysis.model), tokens, analysis.model, unpriced
        )
    cost = CallCost(
        currency=prices.currency, prices_taken_on=prices.taken_on, lines=lines, unpriced=unpriced
    )
    return report.model_copy(update={"cost": cost})


def _llm_lines(
    item: str,
    llm: LLMPrice | None,
    tokens: tuple[int, int, int, int],
    model: str,
    unpriced: list[str],
) -> list[CostLine]:
    if llm is None:
        if any(tokens):
            unpriced.append(f"{item}:{model}")
        return []
    rates = (
        ("input", llm.input_per_mtok),
        ("output", llm.output_per_mtok),
        ("cache read", llm.cache_read_per_mtok),
        ("cache write", llm.cache_write_per_mtok),
    )
    return [
        _line(f"{item} {kind}", count / 1e6, "million tokens", rate)
        for (kind, rate), count in zip(rates, tokens, strict=True)
        if count
    ]


def _line(item: str, quantity: float, unit: str, unit_price: float) -> CostLine:
    return CostLine(
        item=item,
        quantity=round(quantity, 6),
        unit=unit,
        unit_price=unit_price,
        cost=round(quantity * unit_price, 6),
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` (nearest rank; ``values`` must not be empty)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _ms(value: float) -> float:
    return round(value, 2)
