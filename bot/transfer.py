"""Handing a caller to a person: where to (targets), and how each transport does it.

A target is a phone number (any format ``phonenumbers`` reads with a country code, kept as
E.164) or a SIP address (``sip:sales@pbx.example.com``). Phone numbers are shown masked wherever
a target is recorded or logged; SIP addresses are the business's own and shown as they are.

Each transport hands the call over its own way, after the caller heard the agent's last line
(``processors.call_handoff`` runs the hand-off once the audio before it has been played):

- Twilio (:class:`TwilioHandoff`): the live call is updated through the REST API with TwiML
  ``<Response><Dial>target</Dial></Response>``; Twilio leaves our media stream and dials. The
  call's serializer (:class:`TwilioCallSerializer`) then no longer hangs the call up when the
  pipeline ends: that would hang up the transferred caller.
- Daily (:class:`DailyHandoff`): the dial-in's SIP call is transferred with the transport's
  ``sip_call_transfer`` (Daily dials the number or SIP address and bridges the caller).

When the call's own speech service fails (``bot.service_failure``), :meth:`LineHandoff.hand_on`
hands the call on without the agent: Twilio's TwiML ``<Say>`` speaks in Twilio's own voice, then
``<Dial>`` or ``<Hangup/>``; Daily transfers when there is a target.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Protocol

import aiohttp
from loguru import logger
from pipecat.frames.frames import CancelFrame, EndFrame, Frame
from pipecat.serializers.twilio import TwilioFrameSerializer

from bot.twiml import dial_twiml, hand_on_twiml
from processors.call_handoff import Handoff

if TYPE_CHECKING:  # Daily's SDK is optional (the phone-only image has none)
    from pipecat.transports.daily.transport import DailyTransport

#: Twilio's REST API root when none is configured.
TWILIO_API = "https://api.twilio.com"
#: How long the REST update may take.
TWILIO_TIMEOUT_S = 10.0


class LineHandoff(Handoff, Protocol):
    """A transport's hand-off that can also hand on a call its agent can no longer serve."""

    async def hand_on(self, *, say: str, locale: str, target: str | None) -> bool:
        """Without the agent: ``say`` (where the carrier can), then ``target`` or hang up.

        Returns:
            True once the transport took the call over (the pipeline must not hang it up).
        """
        ...


class TwilioCallSerializer(TwilioFrameSerializer):
    """Twilio's serializer, which stops hanging up once the call was handed to someone else."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._handed_off = False

    def handed_off(self) -> None:
        """The call now belongs to another party: the end of the pipeline must not hang it up."""
        self._handed_off = True

    async def serialize(self, frame: Frame) -> str | bytes | None:
        """Serialize as Twilio's serializer does, without the hang-up after a hand-off."""
        if self._handed_off and isinstance(frame, (EndFrame, CancelFrame)):
            return None
        return await super().serialize(frame)


class TwilioHandoff:
    """Transfers a live Twilio call by updating it with ``<Dial>`` TwiML (REST API).

    Args:
        serializer: The call's serializer (told not to hang up once the call is transferred).
        account_sid: The Twilio account.
        auth_token: Its auth token (HTTP Basic password).
        call_sid: The call to transfer.
        base_url: The REST API root (``TWILIO_API_BASE_URL``; a local fake in tests).
    """

    def __init__(
        self,
        *,
        serializer: TwilioCallSerializer,
        account_sid: str,
        auth_token: str,
        call_sid: str,
        base_url: str | None = None,
    ) -> None:
        self._serializer = serializer
        self._account_sid = account_sid
        credentials = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self._headers = {"Authorization": f"Basic {credentials}"}
        self._call_sid = call_sid
        self._root = (base_url or TWILIO_API).rstrip("/")

    async def __call__(self, target: str) -> bool:
        """Update the call with TwiML dialling ``target``."""
        return await self._update(dial_twiml(target))

    async def hand_on(self, *, say: str, locale: str, target: str | None) -> bool:
        """Update the call with TwiML: ``say`` in Twilio's voice, then dial or hang up."""
        return await self._update(hand_on_twiml(say=say, locale=locale, target=target))

    async def _update(self, twiml: str) -> bool:
        url = f"{self._root}/2010-04-01/Accounts/{self._account_sid}/Calls/{self._call_sid}.json"
        timeout = aiohttp.ClientTimeout(total=TWILIO_TIMEOUT_S)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(url, headers=self._headers, data={"Twiml": twiml}) as response,
            ):
                if response.status != 200:
                    logger.warning("Twilio refused to update a call: HTTP {}", response.status)
                    return False
        except (aiohttp.ClientError, TimeoutError) as e:
            logger.warning("Twilio could not be reached to update a call: {}", type(e).__name__)
            return False
        self._serializer.handed_off()
        return True


class DailyHandoff:
    """Transfers the Daily dial-in's SIP call (the transport knows the dial-in's session)."""

    def __init__(self, transport: DailyTransport) -> None:
        self._transport = transport

    async def __call__(self, target: str) -> bool:
        """Transfer the dial-in call to ``target``."""
        error = await self._transport.sip_call_transfer({"toEndPoint": target})
        if error:
            logger.warning("Daily refused the transfer of a call")
            return False
        return True

    async def hand_on(self, *, say: str, locale: str, target: str | None) -> bool:
        """Transfer to ``target`` (Daily has no voice of its own to ``say`` with); else False."""
        return target is not None and await self(target)
