"""The LLM's call-control tools: ``end_call(reason?)`` and ``transfer_call(reason)``.

``end_call``: the agent's goodbye (the text of the response that called it) is already queued
for the voice; the tool queues an ``EndWorkerFrame`` behind it, so the call ends once the
goodbye is heard, through the transport's own hang-up (Twilio's REST hang-up on ``EndFrame``,
Daily leaving the room). The call is recorded as ``ended: agent ended the call``.

``transfer_call``: the target is the per-reason one (``RAPPORT_TRANSFER_TARGETS``) whose name
the reason mentions, else ``RAPPORT_TRANSFER_TO``. With no target, no way to transfer on this
transport, or the business closed (``RAPPORT_BUSINESS_HOURS``), the result tells the LLM why and
asks it to tell the caller: the call goes on. Otherwise the caller hears a short line in their
language, then ``processors.call_handoff`` hands them over and the call ends, recorded with the
transfer (target masked if a phone number, and the reason).

Every result is non-empty (pipecat#4298); both end the tool round without another LLM run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.frames.frames import EndWorkerFrame, FunctionCallResultProperties, TTSSpeakFrame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.services.llm_service import FunctionCallParams, LLMService

from bot.hours import BusinessHours
from bot.targets import shown_target
from memory.calls.recorder import CallRecorder
from memory.models import CallTransfer, clean_text
from memory.privacy.identity import CallerIdentity
from processors.call_handoff import CallHandoffProcessor, Handoff, HandoffFrame

#: Ended reasons (recorded as ``ended: <reason>``).
AGENT_ENDED = "agent ended the call"
TRANSFERRED = "transferred to a person"
#: Longest reason kept from the LLM.
MAX_REASON_CHARS = 120

END_CALL = FunctionSchema(
    name="end_call",
    description=(
        "Hang up. Only when the conversation is over (the caller said goodbye or asked to end "
        "the call): say your short goodbye in the same response, before calling it."
    ),
    properties={
        "reason": {
            "type": "string",
            "description": "Why the call ends, in a few words, e.g. 'caller said goodbye'.",
        }
    },
    required=[],
)

_NO_RUN = FunctionCallResultProperties(run_llm=False)


def _transfer_schema(reasons: list[str]) -> FunctionSchema:
    named = f" Start it with one of: {', '.join(reasons)}, when one applies." if reasons else ""
    return FunctionSchema(
        name="transfer_call",
        description=(
            "Put the caller through to a person at the business: when they ask for a person, "
            "have an emergency, or need what you cannot do. Do not announce it yourself; the "
            "caller is told. If the result says it is not possible, tell the caller why and "
            "offer to take a message or arrange a call-back."
        ),
        properties={
            "reason": {
                "type": "string",
                "description": f"Why, in a few words.{named}",
            }
        },
        required=["reason"],
    )


class CallControlTools:
    """The call-control tools of one call.

    Args:
        transfer_to: The default transfer target; None: none.
        transfer_targets: Targets per reason (lower-case names).
        hours: The business's hours; None: always open.
        handoff: How this call's transport hands a caller over; None: it cannot.
        language: The call's current language (a primary subtag), asked when speaking.
        putting_through: The line said before a transfer, per language (must include "en").
        transfer_failed: The line said when the transport refused it, per language.
        recorder: The call's recorder (keeps the transfer); None when nothing is recorded.
        caller: The caller, for masked log lines; None when anonymous.
        clock: The current time (tests give their own).
    """

    def __init__(
        self,
        *,
        transfer_to: str | None,
        transfer_targets: Mapping[str, str],
        hours: BusinessHours | None,
        handoff: Handoff | None,
        language: Callable[[], str],
        putting_through: Mapping[str, str],
        transfer_failed: Mapping[str, str],
        recorder: CallRecorder | None = None,
        caller: CallerIdentity | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._transfer_to = transfer_to
        self._targets = dict(transfer_targets)
        self._hours = hours
        self._handoff = handoff
        self._language = language
        self._putting_through = putting_through
        self._transfer_failed = transfer_failed
        self._recorder = recorder
        self._who = caller.masked if caller is not None else "an anonymous caller"
        self._clock = clock
        self._transferring = False
        self._ending = False

    def schemas(self) -> list[FunctionSchema]:
        """The tools, for the LLM context."""
        return [END_CALL, _transfer_schema(sorted(self._targets))]

    def register(self, llm: LLMService[Any]) -> None:
        """Register the handlers on the call's LLM service."""
        llm.register_function(END_CALL.name, self.end_call)
        llm.register_function("transfer_call", self.transfer_call)

    def handoff_processor(
        self, worker_of: Callable[[], PipelineWorker]
    ) -> CallHandoffProcessor | None:
        """The processor that hands callers over after the transport's output; None: no hand-off.

        Args:
            worker_of: The call's worker, once built (a refused hand-off speaks through it).
        """
        if self._handoff is None:
            return None

        async def failed(frame: HandoffFrame) -> None:
            self._transferring = False
            logger.warning("The transfer of the call of {} was refused", self._who)
            line = self._transfer_failed.get(self._language(), self._transfer_failed["en"])
            await worker_of().queue_frame(TTSSpeakFrame(line))

        return CallHandoffProcessor(
            handoff=self._handoff,
            on_done=self._transferred,
            on_failed=failed,
            end_reason=TRANSFERRED,
        )

    async def end_call(self, params: FunctionCallParams) -> None:
        """Handle ``end_call(reason?)``: end the call once the goodbye before it is heard."""
        raw = params.arguments.get("reason")
        why = clean_text(raw, MAX_REASON_CHARS) if isinstance(raw, str) else ""
        ended = {"ended": True, "note": "The call is ending."}
        await params.result_callback(ended, properties=_NO_RUN)
        if self._ending:
            return
        self._ending = True
        logger.info("The agent ended the call of {}", self._who)
        reason = f"{AGENT_ENDED} ({why})" if why else AGENT_ENDED
        await params.llm.push_frame(EndWorkerFrame(reason=reason))

    async def transfer_call(self, params: FunctionCallParams) -> None:
        """Handle ``transfer_call(reason)``: put the caller through, or say why not."""
        raw = params.arguments.get("reason")
        reason = clean_text(raw, MAX_REASON_CHARS) if isinstance(raw, str) else ""
        reason = reason or "caller asked for a person"
        declined = self._declined(reason)
        if declined is not None:
            logger.info("Declined a transfer of the call of {}", self._who)
            await params.result_callback({"transferred": False, "reason": declined})
            return
        target = self._target(reason)
        assert target is not None  # checked by _declined
        under_way = self._transferring
        self._transferring = True
        if not under_way:
            line = self._putting_through.get(self._language(), self._putting_through["en"])
            await params.llm.push_frame(TTSSpeakFrame(line))
        await params.result_callback(
            {"transferred": True, "note": "The caller is being put through; say nothing more."},
            properties=_NO_RUN,
        )
        if not under_way:
            await params.llm.push_frame(HandoffFrame(target=target, reason=reason))

    def _declined(self, reason: str) -> str | None:
        """Why a transfer cannot happen now, worded for the LLM to pass on; None when it can."""
        offer = "Tell the caller, and offer to take a message or arrange a call-back."
        if self._target(reason) is None:
            return f"Nobody is set up to take transferred calls. {offer}"
        if self._handoff is None:
            return f"Calls on this line cannot be transferred. {offer}"
        if self._hours is not None:
            now = self._clock()
            if not self._hours.is_open(now):
                return f"The business is closed right now. {self._hours.reopening(now)} {offer}"
        return None

    def _target(self, reason: str) -> str | None:
        words = set(re.findall(r"[\w-]+", reason.lower()))
        lowered = reason.lower()
        for name, target in self._targets.items():
            if name in words or (" " in name and name in lowered):
                return target
        return self._transfer_to

    async def _transferred(self, frame: HandoffFrame) -> None:
        shown = shown_target(frame.target)
        logger.info("Transferred the call of {} to {}", self._who, shown)
        if self._recorder is not None:
            self._recorder.note_transfer(CallTransfer(target=shown, reason=frame.reason))
