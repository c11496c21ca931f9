"""The agent ends calls and puts callers through: ``end_call`` and ``transfer_call``, end to end.

Calls run through the bot's own call assembly (``tests/support/call_harness.py``) on a stand-in
phone line whose output is Pipecat's own output transport (audio is paced and played in order).
Twilio transfers go to the local Twilio REST fake through the bot's own :class:`TwilioHandoff`;
Daily transfers go through the real ``DailyTransport`` (constructed, never joined), whose Daily
client object alone has its ``sip_call_transfer`` replaced by a recorder: that method needs a
joined room, and is the unit boundary of these tests.
"""

from __future__ import annotations

from typing import Any

import pytest
from pipecat.frames.frames import CancelFrame, EndFrame, TranscriptionFrame

from bot.call_control import AGENT_ENDED, TRANSFERRED
from bot.text_line import TextLine
from bot.transfer import DailyHandoff
from bot.wording import PUTTING_THROUGH
from memory.models import CallRecord
from processors.tool_silence import DEFAULT_PHRASES
from tests.fakes.anthropic_server import Reply
from tests.fakes.phone_line import DailyLine
from tests.fakes.twilio_api import FakeTwilioAPI
from tests.support.call_harness import (
    ACCOUNT_SID,
    ANA,
    AUTH_TOKEN,
    CALL_SID,
    Line,
    RunningCall,
    caller_of,
    queued_calls,
    runtime_of,
    twilio_handoff,
)

TARGETS = {"emergency": "+14155550199", "sales": "sip:sales@pbx.example.com"}
ALWAYS_OPEN = {
    "timezone": "Europe/Madrid",
    "weekly": {
        day: [["00:00", "23:59"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    },
}
NEVER_OPEN = {"timezone": "Europe/Madrid", "weekly": {}}
GOODBYE = "Thank you for calling Bella's Bakery. Have a lovely day, goodbye!"


async def last_words(call: RunningCall, text: str) -> None:
    """The caller speaks, and the call is expected to end by itself after it."""
    await call.call.worker.queue_frame(TranscriptionFrame(text, "caller", "2026-03-02T10:00:00Z"))
    await call.finished()


async def record_of(line: Line, call_id: str) -> CallRecord:
    record = await runtime_of(line).store.get_call(caller_of(line, ANA), call_id)
    assert record is not None
    return record


async def test_end_call_speaks_the_goodbye_then_ends_the_call_as_the_agent(line: Line) -> None:
    line.fake.script(
        Reply.text("Yes, we're open until six."),
        Reply.tool_call("end_call", {"reason": "caller said goodbye"}, text=GOODBYE),
    )
    phone = TextLine()
    async with line.call(ANA, "call-bye", transport=phone) as call:
        await call.say("Are you open today?", replies=1)
        await last_words(call, "Great, that's all. Bye!")

    assert len(line.fake.requests) == 2  # no LLM run after end_call
    assert await queued_calls(line) == ["call-bye"]  # analysed once
    record = await record_of(line, "call-bye")
    assert record.ended_reason == f"ended: {AGENT_ENDED} (caller said goodbye)"
    said = [t.text for t in record.transcript if t.role == "assistant"]
    assert said[-1] == GOODBYE
    assert DEFAULT_PHRASES["en"].closing not in said


async def test_end_call_with_nothing_said_gets_a_goodbye_not_the_closing_question(
    line: Line,
) -> None:
    line.fake.script(Reply.tool_call("end_call"))
    async with line.call(ANA, "call-mute-bye", transport=TextLine()) as call:
        await last_words(call, "Bye.")

    record = await record_of(line, "call-mute-bye")
    assert record.ended_reason == f"ended: {AGENT_ENDED}"
    said = [t.text for t in record.transcript if t.role == "assistant"]
    assert said[-1] == DEFAULT_PHRASES["en"].goodbye
    assert DEFAULT_PHRASES["en"].closing not in said


async def test_a_twilio_transfer_dials_the_reason_s_target_after_the_line_is_heard(
    line: Line, twilio_api: FakeTwilioAPI
) -> None:
    line.fake.script(Reply.tool_call("transfer_call", {"reason": "emergency: water leak"}))
    serializer, handoff = twilio_handoff(twilio_api)
    async with line.call(
        ANA,
        CALL_SID,
        transport=TextLine(),
        kind="twilio",
        handoff=handoff,
        RAPPORT_TRANSFER_TO="+34600111222",
        RAPPORT_TRANSFER_TARGETS=TARGETS,
        RAPPORT_BUSINESS_HOURS=ALWAYS_OPEN,
    ) as call:
        await last_words(call, "There's water everywhere, I need someone now!")

    (update,) = twilio_api.updates
    assert (update.account_sid, update.call_sid) == (ACCOUNT_SID, CALL_SID)
    assert update.basic_auth == (ACCOUNT_SID, AUTH_TOKEN)
    assert update.form == {
        "Twiml": "<Response><Dial><Number>+14155550199</Number></Dial></Response>"
    }
    # The transferred call is never hung up when the pipeline ends.
    assert await serializer.serialize(EndFrame()) is None
    assert await serializer.serialize(CancelFrame()) is None
    assert len(twilio_api.updates) == 1

    assert len(line.fake.requests) == 1
    assert await queued_calls(line) == [CALL_SID]
    record = await record_of(line, CALL_SID)
    assert record.ended_reason == f"ended: {TRANSFERRED}"
    assert record.transfer is not None
    assert (record.transfer.target, record.transfer.reason) == (
        "+1•••99",
        "emergency: water leak",
    )
    said = [t.text for t in record.transcript if t.role == "assistant"]
    assert said[-1] == PUTTING_THROUGH["en"]
    assert DEFAULT_PHRASES["en"].closing not in said


async def test_a_daily_transfer_goes_through_the_transport_s_sip_transfer(line: Line) -> None:
    line.fake.script(
        Reply.tool_call("transfer_call", {"reason": "sales question"}, text="Of course.")
    )
    daily = DailyLine()
    transfers: list[dict[str, Any]] = []

    async def sip_call_transfer(settings: dict[str, Any]) -> None:
        transfers.append(dict(settings))

    daily._client.sip_call_transfer = sip_call_transfer  # type: ignore[method-assign]
    async with line.call(
        ANA,
        "call-daily-sales",
        transport=daily,
        kind="daily",
        handoff=DailyHandoff(daily),
        RAPPORT_TRANSFER_TARGETS=TARGETS,
    ) as call:
        await last_words(call, "Can I talk to someone about a wedding order?")

    assert transfers == [{"toEndPoint": "sip:sales@pbx.example.com"}]
    record = await record_of(line, "call-daily-sales")
    assert record.transfer is not None and record.transfer.target == TARGETS["sales"]
    assert record.ended_reason == f"ended: {TRANSFERRED}"


@pytest.mark.parametrize(
    ("settings", "why"),
    [
        pytest.param({}, "Nobody is set up", id="no target"),
        pytest.param(
            {"RAPPORT_TRANSFER_TO": "+34600111222", "RAPPORT_BUSINESS_HOURS": NEVER_OPEN},
            "The business is closed right now",
            id="outside hours",
        ),
    ],
)
async def test_a_transfer_that_cannot_happen_is_declined_in_words_and_the_call_goes_on(
    line: Line, twilio_api: FakeTwilioAPI, settings: dict[str, Any], why: str
) -> None:
    sorry = "I'm sorry, nobody can take your call right now. Can I take a message?"
    line.fake.script(
        Reply.tool_call("transfer_call", {"reason": "caller asked for a person"}),
        Reply.text(sorry),
    )
    _, handoff = twilio_handoff(twilio_api)
    async with line.call(
        ANA, "call-no-transfer", transport=TextLine(), handoff=handoff, **settings
    ) as call:
        await call.say("Can I speak to a person?", replies=2)
        assert not call._task.done()
        await call.end()

    assert twilio_api.updates == []
    (result,) = line.fake.requests[1].tool_results()
    assert '"transferred": false' in result and why in result
    record = await record_of(line, "call-no-transfer")
    assert record.transfer is None
    assert [t.text for t in record.transcript if t.role == "assistant"][-1] == sorry
