"""Twilio: the signed voice webhook, our TwiML, the stream's proof of call, and the transport.

Pipecat's development runner serves a static TwiML without ``<Parameter>``s, so the bot would
never learn who is calling. :func:`add_twilio_routes` registers ``POST /`` answering Twilio's
voice webhook (registered before the runner's own routes, it wins over them):

- The request must carry a valid ``X-Twilio-Signature`` for the public URL it was sent to
  (``RAPPORT_PUBLIC_URL`` or ``-x``); anything else gets 403 and no TwiML.
- The TwiML connects a ``<Stream>`` to ``wss://<public host>/ws`` with the numbers, the
  carrier's STIR/SHAKEN verdict and a :class:`bot.trust.StreamTokens` token as parameters.
- The stream's ``start`` message brings them back; :func:`stream_trust` redeems the token
  before anything about the caller is loaded.
- ``POST /callback-answer`` answers a call back Rapport placed (:mod:`bot.callback`) the same
  way, the callee as the caller, the token binding the follow-up it calls back about;
  ``POST /callback-status`` hears how it ended (unanswered: kept on the follow-up as failed).

The transport is built here rather than by ``create_transport``, which always enables the REST
hang-up with credentials from the environment and cannot point it anywhere but Twilio: here the
hang-up is a setting, and its base URL too (``TWILIO_API_BASE_URL``, a local fake in tests).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from xml.sax.saxutils import quoteattr

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import Response
from loguru import logger
from pipecat.runner.types import CallData
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from twilio.request_validator import RequestValidator

from bot.callback import ANSWER_PATH, STATUS_PATH, CallbackPlacer
from bot.settings import BotSettings
from bot.transfer import TwilioCallSerializer, TwilioHandoff
from bot.trust import (
    CALLBACK_ATTESTATION,
    StreamTokens,
    UsedTokens,
    attestation_trust,
    stream_token_secret,
)
from memory.models import CallTrust
from memory.store.keys import CallRef, agent_call_member, agent_call_ref

#: Twilio Media Streams audio: µ-law at 8 kHz.
SAMPLE_RATE = 8000
#: The stream parameters our TwiML sets (Twilio sends them back in the ``start`` message).
PARAMETERS = ("from_number", "to_number", "attestation", "call_token")


def twiml(*, stream_url: str, parameters: Mapping[str, str]) -> str:
    """TwiML connecting the call to our Media Streams WebSocket, with custom parameters.

    Values are XML-escaped: the caller id is whatever the carrier sent.
    """
    tags = "".join(
        f"<Parameter name={quoteattr(name)} value={quoteattr(value)}/>"
        for name, value in parameters.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Connect><Stream url={quoteattr(stream_url)}>{tags}</Stream></Connect>"
        "</Response>"
    )


def _public_host(request: Request, public_host: str | None) -> str:
    # Without a configured host, the one the request was addressed to (a tunnel such as ngrok
    # forwards it, or names it in X-Forwarded-Host); a forged header only fails the signature.
    return public_host or request.headers.get("x-forwarded-host") or request.headers.get("host", "")


def webhook_url(request: Request, *, public_host: str | None) -> str:
    """The URL Twilio signed: ``https://`` + the public host + the path and query it called."""
    query = f"?{request.url.query}" if request.url.query else ""
    return f"https://{_public_host(request, public_host)}{request.url.path}{query}"


def _form_text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""


def add_twilio_routes(
    app: FastAPI,
    *,
    settings: BotSettings,
    tokens: StreamTokens | None,
    call_backs: Callable[[], CallbackPlacer | None] = lambda: None,
) -> None:
    """Register Twilio's webhooks, answering signed requests with our TwiML.

    ``POST /`` answers a call coming in; ``POST /callback-answer`` (:data:`ANSWER_PATH`) a call
    back Rapport placed (:mod:`bot.callback`), once the caller picked up, and
    ``POST /callback-status`` (:data:`STATUS_PATH`) hears how it ended.

    Args:
        app: The server's app (the runner's, before ``main()`` adds its own routes).
        settings: The auth token that signs webhooks and the public host (``public_url``).
        tokens: Issues the streams' tokens; None without ``TWILIO_AUTH_TOKEN`` (every webhook
            is then refused).
        call_backs: The process's call back placer, once memory is open (None: none).
    """
    validator = RequestValidator(settings.twilio_auth_token) if tokens is not None else None

    async def signed_form(request: Request) -> Mapping[str, Any] | None:
        form = await request.form()
        fields = {name: value for name, value in form.items() if isinstance(value, str)}
        signature = request.headers.get("x-twilio-signature", "")
        url = webhook_url(request, public_host=settings.public_url)
        if validator is None or not validator.validate(url, fields, signature):
            logger.warning("Refused a Twilio voice webhook without a valid signature")
            return None
        return form

    def stream_answer(request: Request, call_sid: str, parameters: dict[str, str]) -> Response:
        assert tokens is not None  # a signed form means there are tokens
        parameters["call_token"] = tokens.issue(
            call_sid=call_sid,
            from_number=parameters["from_number"],
            to_number=parameters["to_number"],
            attestation=parameters["attestation"],
        )
        host = _public_host(request, settings.public_url)
        xml = twiml(stream_url=f"wss://{host}/ws", parameters=parameters)
        return Response(content=xml, media_type="application/xml")

    @app.post("/", include_in_schema=False)
    async def twilio_voice_webhook(request: Request) -> Response:
        form = await signed_form(request)
        if form is None:
            return Response(status_code=403)
        verdict = _form_text(form, "StirVerstat")
        parameters = {
            "from_number": _form_text(form, "From"),
            "to_number": _form_text(form, "To"),
            # Only our own call backs' streams may carry that attestation.
            "attestation": "" if verdict.startswith(CALLBACK_ATTESTATION) else verdict,
        }
        return stream_answer(request, _form_text(form, "CallSid"), parameters)

    @app.post(ANSWER_PATH, include_in_schema=False)
    async def twilio_callback_answer(
        request: Request, caller: str = "", call: str = ""
    ) -> Response:
        form = await signed_form(request)
        if form is None or not caller or not call:
            return Response(status_code=403)
        # Our call: Twilio dialled the caller (To) from the business (From). The number came
        # from our own store, so the callee is the caller; the token binds the call back.
        parameters = {
            "from_number": _form_text(form, "To"),
            "to_number": _form_text(form, "From"),
            "attestation": f"{CALLBACK_ATTESTATION}{agent_call_member(caller, call)}",
        }
        return stream_answer(request, _form_text(form, "CallSid"), parameters)

    @app.post(STATUS_PATH, include_in_schema=False)
    async def twilio_callback_status(
        request: Request, caller: str = "", call: str = ""
    ) -> Response:
        form = await signed_form(request)
        if form is None or not caller or not call:
            return Response(status_code=403)
        placer = call_backs()
        if placer is None:
            return Response(status_code=503)  # Twilio retries a status callback it could not give
        ref = agent_call_ref(settings.agent_id, agent_call_member(caller, call).encode())
        await placer.ended(ref, _form_text(form, "CallStatus"))
        return Response(status_code=204)


async def stream_trust(call_data: CallData, tokens: StreamTokens | None) -> CallTrust | None:
    """How far a Media Stream's caller can be believed; None when the stream must be refused.

    The stream must bring back, unchanged, the token our TwiML issued for its CallSid and
    numbers; the carrier's verdict it carries was signed with them.
    """
    body = call_data.body if isinstance(call_data.body, Mapping) else {}
    values = {name: value for name in PARAMETERS if isinstance(value := body.get(name), str)}
    if tokens is None or len(values) < len(PARAMETERS):
        return None
    if not await tokens.redeem(
        values["call_token"],
        call_sid=call_data.call_id or "",
        from_number=values["from_number"],
        to_number=values["to_number"],
        attestation=values["attestation"],
    ):
        return None
    if values["attestation"].startswith(CALLBACK_ATTESTATION):
        return CallTrust.VERIFIED  # our own call back: the number came from our store
    return attestation_trust(values["attestation"])


def callback_of(call_data: CallData, *, agent_id: str) -> CallRef | None:
    """The call back a stream belongs to (the follow-up Rapport calls back about), or None.

    Only meaningful once :func:`stream_trust` redeemed the stream's token, which binds it.
    """
    body = call_data.body if isinstance(call_data.body, Mapping) else {}
    attestation = body.get("attestation")
    if not isinstance(attestation, str) or not attestation.startswith(CALLBACK_ATTESTATION):
        return None
    member = attestation[len(CALLBACK_ATTESTATION) :].encode()
    return agent_call_ref(agent_id, member)


def stream_tokens(settings: BotSettings, used: UsedTokens) -> StreamTokens | None:
    """The process's stream tokens, keyed by the Twilio auth token; None without one.

    Args:
        settings: The Twilio auth token.
        used: Where redeemed tokens are kept (the process's Redis, shared by every process).
    """
    if not settings.twilio_auth_token:
        return None
    return StreamTokens(stream_token_secret(settings.twilio_auth_token), used=used)


def twilio_transport(
    websocket: WebSocket, call_data: CallData, *, settings: BotSettings
) -> tuple[FastAPIWebsocketTransport, TwilioHandoff | None]:
    """The transport of one Twilio call, from its parsed ``start`` message, and its hand-off.

    The REST hang-up (ending the call on Twilio's side when the bot ends it) is on when
    ``RAPPORT_TWILIO_HANG_UP`` is and credentials are set; without them the bot can still take
    calls, but hanging up is left to the caller. Transfers use the same REST API: without it
    the hand-off is None (``transfer_call`` then declines in words).
    """
    hang_up = settings.twilio_hang_up and bool(
        settings.twilio_account_sid and settings.twilio_auth_token and call_data.call_id
    )
    if settings.twilio_hang_up and not hang_up:
        logger.warning("Twilio credentials or call id missing: the bot cannot hang up this call")
    serializer = TwilioCallSerializer(
        stream_sid=call_data.stream_id or "",
        call_sid=call_data.call_id,
        account_sid=settings.twilio_account_sid if hang_up else None,
        auth_token=settings.twilio_auth_token if hang_up else None,
        base_url=settings.twilio_api_base_url,
        params=TwilioCallSerializer.InputParams(auto_hang_up=hang_up),
    )
    handoff = None
    if hang_up and settings.twilio_account_sid and settings.twilio_auth_token and call_data.call_id:
        handoff = TwilioHandoff(
            serializer=serializer,
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token,
            call_sid=call_data.call_id,
            base_url=settings.twilio_api_base_url,
        )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
        ),
    )
    return transport, handoff
