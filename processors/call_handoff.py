"""CallHandoffProcessor: hands the caller to a person once they heard the agent's last line.

Sits right after the transport's output. A :class:`HandoffFrame` is a data frame, so the output
transport holds it until every bit of audio queued before it has been played, then passes it
on: when it gets here the caller has heard the "I'll put you through now" in full. The hand-off
itself (Twilio's REST update, Daily's SIP transfer) is awaited here, then:

- accepted: ``on_done(frame)`` runs (the call records the transfer) and the call ends with an
  ``EndWorkerFrame`` whose reason names the transfer; the transport does not hang up after it;
- refused: ``on_failed(frame)`` runs (the call tells the caller and goes on).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pipecat.frames.frames import DataFrame, EndWorkerFrame, Frame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from processors.pipecat_options import pipecat_options


class Handoff(Protocol):
    """How a transport hands its caller to ``target``; True once the transport accepted it."""

    async def __call__(self, target: str) -> bool:
        """Hand the caller over."""
        ...


@dataclass
class HandoffFrame(DataFrame):
    """Hand the caller to ``target`` after what was queued before this frame is heard.

    Attributes:
        target: A transfer target (E.164 number or SIP address).
        reason: Why, as the agent gave it; recorded with the transfer.
    """

    target: str
    reason: str


class CallHandoffProcessor(FrameProcessor):
    """Runs the transport's hand-off for each :class:`HandoffFrame`, then ends or goes on.

    Args:
        handoff: The transport's hand-off.
        on_done: Called after an accepted hand-off, before the call ends.
        on_failed: Called after a refused one.
        end_reason: The ended reason of a transferred call.
    """

    def __init__(
        self,
        *,
        handoff: Handoff,
        on_done: Callable[[HandoffFrame], Awaitable[None]],
        on_failed: Callable[[HandoffFrame], Awaitable[None]],
        end_reason: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(**pipecat_options(type(self).__name__, kwargs))
        self._handoff = handoff
        self._on_done = on_done
        self._on_failed = on_failed
        self._end_reason = end_reason

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Hand off on a :class:`HandoffFrame` (consumed); pass every other frame on."""
        await super().process_frame(frame, direction)
        if not (isinstance(frame, HandoffFrame) and direction == FrameDirection.DOWNSTREAM):
            await self.push_frame(frame, direction)
            return
        if await self._handoff(frame.target):
            await self._on_done(frame)
            # Upstream, at once: the worker ends the call before the transport notices that
            # its caller has gone to someone else.
            await self.push_frame(EndWorkerFrame(reason=self._end_reason), FrameDirection.UPSTREAM)
        else:
            await self._on_failed(frame)
