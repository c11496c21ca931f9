"""Daily dial-in: a held call that cannot be connected, or whose dial-in stops, ends the call.

Without this the bot would wait in an empty room until the idle timeout. The call is cancelled
(the caller is not there to hear anything) with a reason naming the event, which the call's
record keeps as its ended reason; the event's data is not logged (it carries phone numbers).
"""

from __future__ import annotations

from pipecat.pipeline.worker import PipelineWorker
from pipecat.transports.base_transport import BaseTransport

#: The Daily transport's dial-in events that end the call, and the ended reason each gives.
DIALIN_ENDINGS = {
    "on_dialin_error": "dial-in error",
    "on_dialin_stopped": "dial-in stopped",
}


def connect_dialin_events(worker: PipelineWorker, transport: BaseTransport) -> None:
    """End the call run by ``worker`` on the Daily ``transport``'s dial-in error or stop."""
    for event, reason in DIALIN_ENDINGS.items():

        async def _end(_transport: BaseTransport, _data: object, reason: str = reason) -> None:
            await worker.cancel(reason=reason)

        transport.add_event_handler(event, _end)
