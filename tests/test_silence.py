"""A silent caller is asked once whether they are still there, then let go at the idle timeout.

Calls run on a stand-in line (``bot/text_line.py``) whose output is Pipecat's own
output transport: the agent's speech starts and stops as it would on a phone, which is what the
user aggregator's idle timer runs on.
"""

from __future__ import annotations

import asyncio
import time

from pipecat.frames.frames import Frame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.workers.runner import WorkerRunner

from bot.silence import IDLE_REASON, SilenceCheck
from bot.text_line import TextLine
from bot.wording import IDLE_GOODBYES, STILL_THERE
from tests.fakes.anthropic_server import Reply
from tests.support.call_harness import (
    ANA,
    GREETING,
    Line,
    caller_of,
    queued_calls,
    runtime_of,
)

QUICK = {"RAPPORT_SILENCE_CHECK_S": 0.4, "RAPPORT_IDLE_TIMEOUT_S": 1.6}


async def test_a_silent_caller_is_checked_on_once_then_the_call_ends_at_the_idle_timeout(
    line: Line,
) -> None:
    started = time.monotonic()
    async with line.call(ANA, "call-quiet", transport=TextLine(), **QUICK) as call:
        await call.finished()  # nobody speaks: the call ends by itself
    took = time.monotonic() - started

    assert line.fake.requests == []  # the check-in and the goodbye need no LLM
    # Never before the idle timeout (a timer fires late on a busy machine, never early).
    assert took >= QUICK["RAPPORT_IDLE_TIMEOUT_S"]
    assert await queued_calls(line) == ["call-quiet"]
    record = await runtime_of(line).store.get_call(caller_of(line, ANA), "call-quiet")
    assert record is not None and record.ended_reason == f"ended: {IDLE_REASON}"
    assert [(t.role, t.text) for t in record.transcript] == [
        ("assistant", GREETING),
        ("assistant", STILL_THERE["en"]),
        ("assistant", IDLE_GOODBYES["en"]),
    ]


async def test_the_check_in_and_the_goodbye_are_in_the_call_s_language(
    line: Line,
) -> None:
    line.fake.script(Reply.text("Sí, hasta las seis."), Reply.text("Perfecto."))
    async with line.call(ANA, "call-es", transport=TextLine(), **QUICK) as call:
        await call.say("Hola, ¿abren hoy por la tarde?", replies=1, language="es")
        await call.say("Vale, gracias por todo.", replies=1, language="es")
        await call.finished()

    record = await runtime_of(line).store.get_call(caller_of(line, ANA), "call-es")
    assert record is not None and record.ended_reason == f"ended: {IDLE_REASON}"
    assert record.language == "es"
    said = [t.text for t in record.transcript if t.role == "assistant"]
    assert said[-2:] == [STILL_THERE["es"], IDLE_GOODBYES["es"]]
    assert said.count(STILL_THERE["es"]) == 1


async def test_without_a_check_in_the_goodbye_comes_at_the_idle_timeout(line: Line) -> None:
    quiet = {"RAPPORT_SILENCE_CHECK_S": 0, "RAPPORT_IDLE_TIMEOUT_S": 0.8}
    async with line.call(ANA, "call-no-check", transport=TextLine(), **quiet) as call:
        await call.finished()

    record = await runtime_of(line).store.get_call(caller_of(line, ANA), "call-no-check")
    assert record is not None and record.ended_reason == f"ended: {IDLE_REASON}"
    assert [(t.role, t.text) for t in record.transcript] == [
        ("assistant", GREETING),
        ("assistant", IDLE_GOODBYES["en"]),
    ]


async def test_a_call_in_which_no_turn_ever_starts_is_cancelled_by_the_safety_net() -> None:
    worker = PipelineWorker(Pipeline([FrameProcessor()]), idle_timeout_secs=None)
    silence = SilenceCheck(
        worker=worker,
        check_after_s=0,
        end_after_s=0.1,
        language=lambda: "en",
        still_there=STILL_THERE,
        goodbyes=IDLE_GOODBYES,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    finished: list[Frame] = []

    @worker.event_handler("on_pipeline_finished")
    async def _finished(_worker: PipelineWorker, frame: Frame) -> None:
        finished.append(frame)

    watch = asyncio.create_task(silence.watch())
    async with asyncio.timeout(10):
        await runner.run()  # nothing happens in this call: only the safety net ends it
        await watch
    assert worker.has_finished() and finished == []  # cancelled, not ended
