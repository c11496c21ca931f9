"""The per-call report: measured from a real call's frames, priced, stored, analysed, shown.

The call runs through the bot's own assembly on a stand-in phone line (Pipecat's own output
transport, which reports the bot's speech), with the real Anthropic service against the fake,
whose answers carry ``usage``. The caller's turn is the VAD's frames, then the transcript.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pipecat.frames.frames import VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame

from memory.analysis.analyzer import TOOL_NAME
from memory.analysis.settings import AnalysisSettings
from memory.analysis.worker import JobOutcome, analysis_worker
from memory.metrics import REGISTRY
from memory.models import CallRecord
from memory.report import load_prices
from tests.fakes.anthropic_server import Reply
from tests.support.analysis_answers import answer
from tests.support.call_harness import ANA, Line, RunningCall, caller_of, runtime_of

#: Round numbers, so the expected cost is plain arithmetic.
TEST_PRICES = {
    "currency": "EUR",
    "taken_on": "2030-01-01",
    "stt": {"nova-3": {"per_minute": 0.01}},
    "llm": {
        "claude-haiku-4-5": {
            "input_per_mtok": 2.0,
            "output_per_mtok": 10.0,
            "cache_read_per_mtok": 0.2,
            "cache_write_per_mtok": 2.5,
        }
    },
    "tts": {"azure-neural": {"per_million_characters": 20.0}},
}


@pytest.fixture
def prices_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(TEST_PRICES), encoding="utf-8")
    monkeypatch.setenv("RAPPORT_PRICES_FILE", str(path))
    return path


async def speak(call: RunningCall, text: str, *, replies: int) -> None:
    """The caller speaks (VAD start and stop, as Silero reports them), then is transcribed.

    The user aggregator's turn strategies decide the turn is over, as in a real call.
    """
    worker = call.call.worker
    await worker.queue_frame(VADUserStartedSpeakingFrame())
    await asyncio.sleep(0.05)
    await worker.queue_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
    await call.say(text, replies=replies)


async def test_a_call_is_reported_with_the_fakes_usage_frame_latencies_and_its_cost(
    line: Line, prices_file: Path
) -> None:
    from bot.text_line import TextLine

    fake = line.fake
    fake.script(Reply.text("We open at eight."), Reply.text("Yes, every day."))
    async with line.call(ANA, "call-report", transport=TextLine()) as call:
        await asyncio.sleep(0.3)  # the greeting is played
        await speak(call, "When do you open?", replies=1)
        await asyncio.sleep(0.3)
        await speak(call, "On Sundays too?", replies=1)
        await asyncio.sleep(0.3)
        await call.end()

    ana = caller_of(line, ANA)
    record = await runtime_of(line).store.get_call(ana, "call-report")
    assert record is not None and record.report is not None
    report = record.report
    # Tokens: exactly what the fake answered with, summed over the call's requests.
    assert [r.usage for r in fake.requests] and all(r.usage for r in fake.requests)
    usage = report.usage
    assert usage.llm_input_tokens == sum(r.usage["input_tokens"] for r in fake.requests)
    assert usage.llm_output_tokens == sum(r.usage["output_tokens"] for r in fake.requests)
    assert usage.llm_requests == len(fake.requests) == 2
    assert (usage.stt_model, usage.llm_model, usage.tts_model) == (
        "nova-3",
        "claude-haiku-4-5",
        "azure-neural",
    )
    # Latencies from frames: pickup, two turns caller-stop (VAD's silence taken back) to audio.
    assert report.pickup_to_first_audio_ms is not None and report.pickup_to_first_audio_ms > 0
    assert len(report.turns) == 2
    for turn in report.turns:
        assert turn.voice_to_voice_ms is not None and turn.voice_to_voice_ms >= 200
        assert turn.llm_ttfb_ms is not None and turn.llm_ttfb_ms > 0
    assert report.voice_to_voice.count == 2
    assert report.voice_to_voice.max_ms == max(t.voice_to_voice_ms or 0 for t in report.turns)
    assert report.llm_ttfb.count == 2
    assert report.duration_s > 0.9
    # Memory: the load is timed against the call start's budget (met or not, as it happened).
    assert report.memory is not None and report.memory.load_ms is not None
    assert report.memory.load_budget_ms == 150
    assert report.memory.load_met_budget is (report.memory.load_ms <= 150)
    # Cost: the test price table, item by item (the STT billed on the call's length).
    cost = report.cost
    assert (cost.currency, cost.prices_taken_on) == ("EUR", "2030-01-01")
    expected = (
        usage.llm_input_tokens * 2.0 / 1e6
        + usage.llm_output_tokens * 10.0 / 1e6
        + usage.stt_audio_seconds / 60 * 0.01
        + usage.tts_characters * 20.0 / 1e6
    )
    assert usage.stt_audio_seconds == pytest.approx(report.duration_s, abs=0.01)
    assert cost.total == pytest.approx(expected, abs=1e-5)
    assert usage.tts_characters >= len("We open at eight.Yes, every day.")
    assert {line.item for line in cost.lines} == {"stt", "llm input", "llm output", "tts"}

    # The analysis adds its own request's tokens, priced from the same table.
    fake.script(Reply.tool_call(TOOL_NAME, answer(summary="Asked about opening hours.")))
    settings = AnalysisSettings(ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=fake.base_url)
    assert line.memory is not None
    async with analysis_worker(
        runtime_of(line).store, line.memory.queue, settings, prices=load_prices(prices_file)
    ) as worker:
        job = await worker.next_job()
        assert job is not None
        assert await worker.process(job) == JobOutcome.ANALYSED
    analysed = await runtime_of(line).store.get_call(ana, "call-report")
    assert analysed is not None and analysed.report is not None
    analysis = analysed.report.analysis
    request = fake.requests[-1].usage
    assert analysis is not None
    assert (analysis.input_tokens, analysis.output_tokens) == (
        request["input_tokens"],
        request["output_tokens"],
    )
    added = request["input_tokens"] * 2.0 / 1e6 + request["output_tokens"] * 10.0 / 1e6
    assert analysed.report.cost.total == pytest.approx(cost.total + added, abs=1e-5)
    # Stored and read back as the same model (the dashboard and webhook read this shape).
    assert CallRecord.model_validate_json(analysed.model_dump_json()).report == analysed.report


async def test_metrics_after_a_call_parse_and_name_no_caller(line: Line, prices_file: Path) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from bot.text_line import TextLine

    line.fake.script(Reply.text("We open at eight."))
    async with line.call(ANA, "call-metrics", transport=TextLine(), kind="twilio") as call:
        await asyncio.sleep(0.2)
        await speak(call, "When do you open?", replies=1)
        await asyncio.sleep(0.2)
        await call.end()

    text = generate_latest(REGISTRY).decode()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    calls = {
        tuple(sorted(sample.labels.items())): sample.value
        for sample in families["rapport_calls"].samples
        if sample.name == "rapport_calls_total"
    }
    key = (("outcome", "ended"), ("transport", "twilio"), ("trust", "verified"))
    assert calls[key] >= 1
    v2v = {s.name: s.value for s in families["rapport_voice_to_voice_seconds"].samples}
    assert v2v["rapport_voice_to_voice_seconds_count"] >= 1
    assert v2v["rapport_voice_to_voice_seconds_sum"] > 0
    assert families["rapport_active_calls"].samples[0].value == 0
    loads = {s.name: s.value for s in families["rapport_memory_load_seconds"].samples}
    assert loads["rapport_memory_load_seconds_count"] >= 1
    for needle in ("call-metrics", "4155550123", "+1415"):
        assert needle not in text
