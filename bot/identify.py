"""Who is calling, per transport: the raw caller id, the call id and how far to believe it.

- Twilio: the ``from_number`` custom parameter of the Media Streams ``start`` message (our TwiML
  passes it, see :mod:`bot.twilio`), promoted by Pipecat to ``call_data.from_number``; its trust
  comes from the stream's redeemed token (:func:`bot.twilio.stream_trust`).
- Daily dial-in: ``body["dialin_settings"]["From"]`` from the dial-in webhook; verified only
  when the webhook was signed and the forwarded SIP headers carry an A attestation.
- Local WebRTC room: ``{"caller": "+1..."}`` in the start request body, else the ``--caller``
  flag, so a developer can call twice as the same caller from the browser; honoured only where
  the room is the developer's own (loopback, or ``RAPPORT_TEST_ROOM``).
- Anything else is anonymous.

The raw number is returned as given: :meth:`memory.runtime.MemoryRuntime.identify` normalises
it (or finds it anonymous). It must never be logged; log ``CallerIdentity.masked``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loguru import logger
from pipecat.runner.types import (
    CallData,
    DailyRunnerArguments,
    RunnerArguments,
    SmallWebRTCRunnerArguments,
    WebSocketRunnerArguments,
)

from bot.trust import attestation_trust, is_loopback, sip_attestation
from memory.models import CallTrust


@dataclass(frozen=True, slots=True)
class CallOrigin:
    """Where a call comes from.

    Attributes:
        transport: ``webrtc``, ``daily``, ``twilio``, or another transport's name.
        caller: The raw caller id, or None when the transport gives none (anonymous).
        call_id: The provider's call id when there is one (Twilio CallSid, Daily dial-in call
            id), else the runner's session id, else a fresh id.
        trust: How far the caller id can be believed: a claimed number is ``unverified``
            unless a transport proved more; ``anonymous`` whenever there is no number.
    """

    transport: str
    caller: str | None
    call_id: str
    trust: CallTrust = CallTrust.UNVERIFIED

    def __post_init__(self) -> None:
        if self.caller is None:
            object.__setattr__(self, "trust", CallTrust.ANONYMOUS)

    def __repr__(self) -> str:
        # Dataclass reprs end up in logs and tracebacks; the raw number must not.
        caller = "anonymous" if self.caller is None else "•••"
        return (
            f"CallOrigin(transport={self.transport!r}, caller={caller}, "
            f"call_id={self.call_id!r}, trust={self.trust.value})"
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


def serves_on_loopback(runner_args: RunnerArguments) -> bool:
    """Whether the runner listens on a loopback address only (the developer's own machine)."""
    host = getattr(runner_args.cli_args, "host", None)
    if not isinstance(host, str):
        return False
    return is_loopback(host.strip().lower())


def identify_call(
    runner_args: RunnerArguments,
    *,
    telephony: tuple[str, CallData] | None = None,
    stream_trust: CallTrust | None = None,
    room_callers: bool = True,
    dialin_signed: bool = False,
) -> CallOrigin:
    """Find the caller id, call id and trust level of a call the development runner started.

    Args:
        runner_args: What the runner passed to ``bot()``.
        telephony: For a WebSocket session, what ``parse_telephony_websocket`` returned
            (transport type and call data); the WebSocket's handshake must be read first.
        stream_trust: For a Twilio stream, the trust its redeemed token carried.
        room_callers: Whether the local room may say who is calling (see
            :func:`serves_on_loopback`); otherwise its calls are anonymous.
        dialin_signed: Whether every Daily dial-in webhook was signature-checked, so the SIP
            headers it forwarded can be believed.

    Returns:
        The call's origin; ``caller`` is None for an anonymous caller.
    """
    body = _body(runner_args)
    session_id = runner_args.session_id
    if isinstance(runner_args, SmallWebRTCRunnerArguments):
        cli_caller = getattr(runner_args.cli_args, "caller", None)
        caller = _text(body.get("caller")) or _text(cli_caller)
        if caller is not None and not room_callers:
            logger.warning(
                "The local room's caller number was ignored: the server listens beyond "
                "loopback (RAPPORT_TEST_ROOM=true allows it)"
            )
            caller = None
        return CallOrigin(
            transport="webrtc",
            caller=caller,
            call_id=_call_id(session_id),
            trust=CallTrust.VERIFIED,  # the developer's own room
        )
    if isinstance(runner_args, DailyRunnerArguments):
        dialin = body.get("dialin_settings")
        dialin = dialin if isinstance(dialin, Mapping) else {}
        sip_headers = dialin.get("sip_headers")
        attested = sip_attestation(sip_headers if isinstance(sip_headers, Mapping) else None)
        return CallOrigin(
            transport="daily",
            caller=_text(dialin.get("From")),
            call_id=_call_id(dialin.get("call_id"), session_id),
            trust=attestation_trust(attested) if dialin_signed else CallTrust.UNVERIFIED,
        )
    if isinstance(runner_args, WebSocketRunnerArguments) and telephony is not None:
        transport, call_data = telephony
        caller = _text(call_data.from_number) if transport == "twilio" else None
        return CallOrigin(
            transport=transport,
            caller=caller,
            call_id=_call_id(call_data.call_id, session_id),
            trust=stream_trust or CallTrust.UNVERIFIED,
        )
    return CallOrigin(transport="unknown", caller=None, call_id=_call_id(session_id))
