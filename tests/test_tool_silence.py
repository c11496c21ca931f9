"""ToolSilenceGuard with pipecat's run_test: the three silence cases, never over real text."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from pipecat.frames.frames import (
    Frame,
    FunctionCallFromLLM,
    FunctionCallInProgressFrame,
    FunctionCallResultFrame,
    FunctionCallResultProperties,
    FunctionCallsStartedFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSSpeakFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.tests.utils import SleepFrame, run_test

from processors.tool_silence import DEFAULT_PHRASES, ToolSilenceGuard

EN = DEFAULT_PHRASES["en"]
SLOW = 0.3  # filler_after in tests that want a filler; tools "run" 2-3x as long
NEVER = 30.0  # filler_after in tests where the filler must not get in the way


def response(*texts: str, calls: Sequence[str] = ()) -> list[Frame]:
    """One LLM response: its text, then (as Pipecat does) its tool batch, then its end."""
    started = FunctionCallsStartedFrame(
        function_calls=[
            FunctionCallFromLLM(
                function_name="remember", tool_call_id=call, arguments={}, context=LLMContext()
            )
            for call in calls
        ]
    )
    return [
        LLMFullResponseStartFrame(),
        *(LLMTextFrame(text) for text in texts),
        *([started] if calls else []),
        LLMFullResponseEndFrame(),
    ]


def running(call: str, *, sync: bool = True) -> FunctionCallInProgressFrame:
    return FunctionCallInProgressFrame(
        function_name="remember", tool_call_id=call, arguments={}, cancel_on_interruption=sync
    )


def result(call: str, value: object, **kwargs: object) -> FunctionCallResultFrame:
    return FunctionCallResultFrame(
        function_name="remember", tool_call_id=call, arguments={}, result=value, **kwargs
    )


async def spoken(
    frames: Sequence[Frame], *, filler_after: float = NEVER, language: str = "en"
) -> tuple[list[TTSSpeakFrame], Sequence[Frame]]:
    guard = ToolSilenceGuard(filler_after=filler_after, language=language)
    down, _ = await run_test(guard, frames_to_send=frames)
    return [frame for frame in down if isinstance(frame, TTSSpeakFrame)], down


async def test_tool_only_response_then_empty_follow_up_says_closing_once() -> None:
    frames = [*response(calls=["t1"]), running("t1"), result("t1", {"saved": True}), *response()]
    said, down = await spoken(frames)
    assert [frame.text for frame in said] == [EN.closing]
    assert said[0].append_to_context is True
    # Spoken after the empty follow-up has gone by, not in the middle of it.
    assert down.index(said[0]) == len(down) - 1


@pytest.mark.parametrize("falsy", [None, {}, ""])
async def test_falsy_result_says_closing_because_pipecat_does_not_rerun(falsy: object) -> None:
    frames = [*response(calls=["t1"]), running("t1"), result("t1", falsy)]
    said, down = await spoken(frames)
    assert [frame.text for frame in said] == [EN.closing]
    assert isinstance(down[down.index(said[0]) - 1], FunctionCallResultFrame)


@pytest.mark.parametrize(
    "no_rerun",
    [{"run_llm": False}, {"properties": FunctionCallResultProperties(run_llm=False)}],
)
async def test_result_that_skips_the_llm_says_closing(no_rerun: dict[str, object]) -> None:
    frames = [*response(calls=["t1"]), running("t1"), result("t1", {"ok": True}, **no_rerun)]
    said, _ = await spoken(frames)
    assert [frame.text for frame in said] == [EN.closing]


async def test_slow_tool_says_filler_exactly_once() -> None:
    frames = [
        *response(calls=["t1"]),
        running("t1"),
        SleepFrame(sleep=SLOW * 3),
        result("t1", {"saved": True}),
        *response("Saved it."),
    ]
    said, _ = await spoken(frames, filler_after=SLOW)
    assert [frame.text for frame in said] == [EN.filler]
    assert said[0].append_to_context is False


async def test_fast_tool_with_spoken_follow_up_says_nothing() -> None:
    frames = [*response(calls=["t1"]), running("t1"), result("t1", "ok"), *response("Saved it.")]
    said, _ = await spoken(frames, filler_after=SLOW)
    assert said == []


async def test_text_before_tool_call_means_no_filler_and_no_closing() -> None:
    frames = [
        *response("Let me note that down.", calls=["t1"]),
        running("t1"),
        SleepFrame(sleep=SLOW * 3),
        result("t1", None),
    ]
    said, _ = await spoken(frames, filler_after=SLOW)
    assert said == []


async def test_text_the_caller_does_not_hear_does_not_count() -> None:
    unspoken = response("(noting the fact)", calls=["t1"])
    unspoken[1].skip_tts = True
    frames = [*unspoken, running("t1"), result("t1", None)]
    said, _ = await spoken(frames)
    assert [frame.text for frame in said] == [EN.closing]


async def test_slow_tool_then_falsy_result_says_filler_then_closing() -> None:
    frames = [*response(calls=["t1"]), running("t1"), SleepFrame(sleep=SLOW * 3), result("t1", {})]
    said, _ = await spoken(frames, filler_after=SLOW)
    assert [frame.text for frame in said] == [EN.filler, EN.closing]


async def test_interruption_forgets_the_round_and_cancels_the_filler() -> None:
    frames = [
        *response(calls=["t1"]),
        running("t1"),
        SleepFrame(sleep=0.05),
        InterruptionFrame(),  # long before the filler is due...
        SleepFrame(sleep=1.5),  # ...and long after it would have been said
        result("t1", None),  # a late result of the forgotten call
        *response(calls=["t2"]),
        running("t2"),
        result("t2", None),
    ]
    said, _ = await spoken(frames, filler_after=1.0)
    assert [frame.text for frame in said] == [EN.closing]  # only the new round's


async def test_chained_tools_are_one_round() -> None:
    frames = [
        *response(calls=["t1"]),
        running("t1"),
        SleepFrame(sleep=SLOW * 2),
        result("t1", {"saved": True}),
        *response(calls=["t2"]),
        running("t2"),
        SleepFrame(sleep=SLOW * 2),
        result("t2", {"saved": True}),
        *response(),
        *response(),  # a second empty response is not a second trigger
    ]
    said, _ = await spoken(frames, filler_after=SLOW)
    assert [frame.text for frame in said] == [EN.filler, EN.closing]


async def test_opening_response_ending_after_the_result_still_waits_for_the_follow_up() -> None:
    opening = response(calls=["t1"])
    frames = [*opening[:-1], running("t1"), result("t1", {"saved": True}), opening[-1]]
    said, _ = await spoken([*frames, *response()])
    assert [frame.text for frame in said] == [EN.closing]


async def test_round_ended_by_a_falsy_result_is_over_for_later_responses() -> None:
    frames = [
        *response(calls=["t1"]),
        running("t1"),
        result("t1", {"saved": True}),
        *response(calls=["t2"]),
        running("t2"),
        result("t2", None),
        *response(),  # a later response (no interruption in between) is not a follow-up
        *response("Anything else?"),
    ]
    said, _ = await spoken(frames)
    assert [frame.text for frame in said] == [EN.closing]


async def test_parallel_calls_wait_for_the_last_result() -> None:
    frames = [
        *response(calls=["t1", "t2"]),
        running("t1"),
        running("t2"),
        result("t1", {"saved": True}),
        result("t2", None),
        result("t2", None),  # a duplicate result is not a second trigger
    ]
    said, _ = await spoken(frames)
    assert [frame.text for frame in said] == [EN.closing]


async def test_async_tools_do_not_hold_the_conversation_so_are_ignored() -> None:
    frames = [*response(calls=["t1"]), running("t1", sync=False), result("t1", None)]
    said, _ = await spoken(frames, filler_after=SLOW)
    assert said == []


@pytest.mark.parametrize(("language", "phrases"), [("es-ES", "es"), ("ca", "ca"), ("fr", "en")])
async def test_phrases_follow_the_language(language: str, phrases: str) -> None:
    frames = [*response(calls=["t1"]), running("t1"), SleepFrame(sleep=SLOW * 2), result("t1", "")]
    said, _ = await spoken(frames, filler_after=SLOW, language=language)
    expected = DEFAULT_PHRASES[phrases]
    assert [frame.text for frame in said] == [expected.filler, expected.closing]


async def test_language_can_change_mid_call() -> None:
    guard = ToolSilenceGuard(filler_after=NEVER)
    guard.language = "ca-ES"
    down, _ = await run_test(
        guard, frames_to_send=[*response(calls=["t1"]), running("t1"), result("t1", None)]
    )
    said = [frame.text for frame in down if isinstance(frame, TTSSpeakFrame)]
    assert said == [DEFAULT_PHRASES["ca"].closing]
    assert guard.language == "ca"
