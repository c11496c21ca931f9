"""Who is calling, per transport: the raw caller id and the call id, in one place.

- Twilio: the ``from_number`` custom parameter of the Media Streams ``start`` message (our TwiML
  passes it, see :mod:`bot.twilio`), promoted by Pipecat to ``call_data.from_number``.
- Daily dial-in: ``body["dialin_settings"]["From"]`` from the dial-in webhook.
- Local WebRTC room: ``{"caller": "+1..."}`` in the start request body, else the ``--caller``
  flag, so a developer can call twice as the same caller from the browser.
- Anything else is anonymous.

The raw number is returned as given: :meth:`memory.runtime.MemoryRuntime.identify` normalises
it (or finds it anonymous). It must never be logged; log ``CallerIdentity.masked``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipecat.runner.types import (
    CallData,
    DailyRunnerArguments,
    RunnerArguments,
    SmallWebRTCRunnerArguments,
    WebSocketRunnerArguments,
)


@dataclass(frozen=True, slots=True)
class CallOrigin:
    """Where a call comes from.

    Attributes:
        transport: ``webrtc``, ``daily``, ``twilio``, or another transport's name.
        caller: The raw caller id, or None when the transport gives none (anonymous).
        call_id: The provider's call id when there is one (Twilio CallSid, Daily dial-in call
            id), else the runner's session id, else a fresh id.
    """

    transport: str
    caller: str | None
    call_id: str

    def __repr__(self) -> str:
        # Dataclass reprs end up in logs and tracebacks; the raw number must not.
        caller = "anonymous" if self.caller is None else "•••"
        return (
            f"CallOrigin(transport={self.transport!r}, caller={caller}, call_id={self.call_id!r})"
        )


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _body(runner_args: RunnerArguments) -> Mapping[str, Any]:
    return runner_args.body if isinstance(runner_args.body, Mapping) else {}


def _call_id(*candidates: Any) -> str:
    for candidate in candidates:
        if text := _text(candidate):
            return text
    return uuid.uuid4().hex


def identify_call(
    runner_args: RunnerArguments,
    *,
    telephony: tuple[str, CallData] | None = None,
) -> CallOrigin:
    """Find the caller id and call id of a call the development runner started.

    Args:
        runner_args: What the runner passed to ``bot()``.
        telephony: For a WebSocket session, what ``parse_telephony_websocket`` returned
            (transport type and call data); the WebSocket's handshake must be read first.

    Returns:
        The call's origin; ``caller`` is None for an anonymous caller.
    """
    body = _body(runner_args)
    session_id = runner_args.session_id
    if isinstance(runner_args, SmallWebRTCRunnerArguments):
        cli_caller = getattr(runner_args.cli_args, "caller", None)
        caller = _text(body.get("caller")) or _text(cli_caller)
        return CallOrigin(transport="webrtc", caller=caller, call_id=_call_id(session_id))
    if isinstance(runner_args, DailyRunnerArguments):
        dialin = body.get("dialin_settings")
        dialin = dialin if isinstance(dialin, Mapping) else {}
        return CallOrigin(
            transport="daily",
            caller=_text(dialin.get("From")),
            call_id=_call_id(dialin.get("call_id"), session_id),
        )
    if isinstance(runner_args, WebSocketRunnerArguments) and telephony is not None:
        transport, call_data = telephony
        caller = _text(call_data.from_number) if transport == "twilio" else None
        return CallOrigin(
            transport=transport, caller=caller, call_id=_call_id(call_data.call_id, session_id)
        )
    return CallOrigin(transport="unknown", caller=None, call_id=_call_id(session_id))
