"""Daily's transport with no network behind it: its dial-in events, on a text line.

:class:`DailyLine` is the real ``DailyTransport``, constructed but never joined, with the input
and output of the product's text line (:mod:`bot.text_line`): its dial-in events are Daily's
own, fired through Pipecat's event handler API.
"""

from __future__ import annotations

from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.daily.transport import DailyParams, DailyTransport

from bot.text_line import LineInput, LineOutput


class DailyLine(DailyTransport):
    """Daily's transport and its events, with the text line's input and output."""

    def __init__(self) -> None:
        super().__init__("https://rapport-test.daily.co/room", None, "Rapport", DailyParams())
        self._line_input = LineInput()
        self._line_output = LineOutput()

    def input(self) -> FrameProcessor:  # type: ignore[override]
        return self._line_input

    def output(self) -> FrameProcessor:  # type: ignore[override]
        return self._line_output

    async def emit(self, event: str, data: object) -> None:
        """What Daily's client callback does for a dial-in event."""
        await self._call_event_handler(event, data)
