"""A caller who goes quiet is asked once whether they are still there, then politely let go.

Built on the user aggregator's idle detection (``LLMUserAggregatorParams.user_idle_timeout``:
the check-in's time, or the idle timeout without a check-in): Pipecat times the silence from the
moment the agent stops speaking and reports it with ``on_user_turn_idle``. The first report
speaks the check-in ("Are you still there?") and moves the timeout on to the rest of the idle
timeout; a second one, with the caller still silent, speaks the goodbye and ends the call with an
``EndFrame`` whose reason says idle. Without a check-in the first report says the goodbye. Both
lines go into the context, so the call's record has them as the agent's turns. The caller
speaking again starts the count over.

The worker's own idle timeout is off: Pipecat runs it on an observer handed every frame of the
call. :meth:`SilenceCheck.watch` is the safety net in its place, fed by the turn events of the
two aggregators (the caller's turn starting, the agent's ending, the caller's silence: two a
turn, not one a frame): a call in which none comes for twice the idle timeout (an opening that
never played, a hung service, a line with no audio out) is cancelled, as Pipecat's idle timeout
would cancel it. Twice: the goodbye, timed from the end of the agent's last words, comes first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from loguru import logger
from pipecat.frames.frames import EndFrame, TTSSpeakFrame, UserIdleTimeoutUpdateFrame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_response_universal import (
    LLMAssistantAggregator,
    LLMUserAggregator,
)

#: The ended reason of a call the caller left silent (recorded as ``ended: <reason>``).
IDLE_REASON = "idle timeout: the caller stayed silent"
#: The cancel reason of a call in which nothing happened at all for longer than that.
STALLED_REASON = "idle timeout: no turn started or ended"


class SilenceCheck:
    """Checks in on a silent caller once, then says goodbye and ends the call.

    Args:
        worker: The call's pipeline worker (the lines and the end are queued on it).
        check_after_s: Silence before the check-in; 0: no check-in, the goodbye comes at
            ``end_after_s``.
        end_after_s: Silence (from the agent's last words before the check-in) before the
            goodbye; more than ``check_after_s``.
        language: The call's current language (a primary subtag), asked when speaking.
        still_there: The check-in per language; must include ``"en"``.
        goodbyes: The goodbye per language; must include ``"en"``.
    """

    def __init__(
        self,
        *,
        worker: PipelineWorker,
        check_after_s: float,
        end_after_s: float,
        language: Callable[[], str],
        still_there: Mapping[str, str],
        goodbyes: Mapping[str, str],
    ) -> None:
        self._worker = worker
        self._check_after_s = check_after_s
        self._end_after_s = end_after_s
        self._language = language
        self._still_there = still_there
        self._goodbyes = goodbyes
        self._checked_in = False
        self._ending = False
        self._turn_event = asyncio.Event()

    def attach(self, user: LLMUserAggregator, assistant: LLMAssistantAggregator) -> None:
        """Listen to the idle and turn events of the call's two aggregators."""
        user.add_event_handler("on_user_turn_idle", self._on_idle)
        user.add_event_handler("on_user_turn_started", self._on_caller_spoke)
        assistant.add_event_handler("on_assistant_turn_stopped", self._on_turn_event)

    async def watch(self) -> None:
        """Cancel the call once no turn event came for twice the idle timeout; run beside it."""
        while True:
            try:
                async with asyncio.timeout(2 * self._end_after_s):
                    await self._turn_event.wait()
            except TimeoutError:
                break
            self._turn_event.clear()
        logger.warning("No turn started or ended for the idle timeout; cancelling the call")
        await self._worker.cancel(reason=STALLED_REASON)

    async def _on_turn_event(self, *_args: Any) -> None:
        self._turn_event.set()

    async def _on_idle(self, _user: LLMUserAggregator) -> None:
        await self._on_turn_event()
        if self._ending:
            return
        language = self._language()
        if self._check_after_s and not self._checked_in:
            self._checked_in = True
            rest = UserIdleTimeoutUpdateFrame(timeout=self._end_after_s - self._check_after_s)
            line = self._still_there.get(language, self._still_there["en"])
            await self._worker.queue_frames([rest, TTSSpeakFrame(line)])
            return
        self._ending = True
        goodbye = self._goodbyes.get(language, self._goodbyes["en"])
        await self._worker.queue_frames([TTSSpeakFrame(goodbye), EndFrame(reason=IDLE_REASON)])

    async def _on_caller_spoke(self, _user: LLMUserAggregator, *_args: Any) -> None:
        await self._on_turn_event()
        if self._checked_in and not self._ending:
            self._checked_in = False
            await self._worker.queue_frame(UserIdleTimeoutUpdateFrame(timeout=self._check_after_s))
