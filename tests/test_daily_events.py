"""Daily dial-in: an error or a stop of the dial-in ends the call, recorded and queued once.

The transport is Pipecat's real ``DailyTransport`` (never joined: ``tests/fakes/phone_line.py``)
so the events are Daily's own names, fired through Pipecat's event handler API the way the
Daily client's callbacks fire them.
"""

from __future__ import annotations

import pytest

from tests.fakes.anthropic_server import Reply
from tests.fakes.phone_line import DailyLine
from tests.support.call_harness import (
    ANA,
    Line,
    caller_of,
    queued_calls,
    runtime_of,
)


@pytest.mark.parametrize(
    ("event", "reason"),
    [("on_dialin_error", "dial-in error"), ("on_dialin_stopped", "dial-in stopped")],
)
async def test_a_dial_in_event_ends_the_call_and_queues_it_once(
    line: Line,
    event: str,
    reason: str,
) -> None:
    line.fake.script(Reply.text("Yes, until six."))
    daily = DailyLine()
    async with line.call(ANA, "call-daily", transport=daily, kind="daily") as call:
        await call.say("Are you open today?", replies=1)
        await daily.emit(event, {"sessionId": "dialin-session"})
        await call.finished()
        await daily.emit(event, {"sessionId": "dialin-session"})  # a repeat changes nothing

    assert await queued_calls(line) == ["call-daily"]
    record = await runtime_of(line).store.get_call(caller_of(line, ANA), "call-daily")
    assert record is not None and record.ended_reason == f"cancelled: {reason}"
    assert [t.text for t in record.transcript][-2:] == ["Are you open today?", "Yes, until six."]


async def test_other_transports_get_no_dial_in_handlers(
    line: Line,
) -> None:
    daily = DailyLine()
    async with line.call(ANA, "call-webrtc", transport=daily, kind="webrtc") as call:
        await daily.emit("on_dialin_error", {})
        assert not call._task.done()
