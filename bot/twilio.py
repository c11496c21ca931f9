"""Twilio: our TwiML webhook (it passes the caller's number on) and the call's transport.

Pipecat's development runner serves a static TwiML without ``<Parameter>``s, so the bot would
never learn who is calling. :func:`add_twilio_routes` registers ``POST /`` answering Twilio's
voice webhook with a ``<Connect><Stream>`` to ``wss://<host>/ws`` that carries ``from_number``
and ``to_number``; registered before the runner's own routes, it wins over them.

The transport is built here rather than by ``create_transport``, which always enables the REST
hang-up with credentials from the environment and cannot point it anywhere but Twilio: here the
hang-up is a setting, and its base URL too (``TWILIO_API_BASE_URL``, a local fake in tests).
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import Response
from loguru import logger
from pipecat.runner.types import CallData
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport

from bot.settings import BotSettings

#: Twilio Media Streams audio: µ-law at 8 kHz.
SAMPLE_RATE = 8000


def twiml(*, stream_url: str, from_number: str, to_number: str) -> str:
    """TwiML connecting the call to our Media Streams WebSocket, with the numbers as parameters.

    Values are XML-escaped: the caller id is whatever the carrier sent.
    """
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Connect><Stream url={quoteattr(stream_url)}>"
        f'<Parameter name="from_number" value={quoteattr(from_number)}/>'
        f'<Parameter name="to_number" value={quoteattr(to_number)}/>'
        "</Stream></Connect></Response>"
    )


def stream_url(request: Request | WebSocket, *, proxy: str | None) -> str:
    """Where Twilio should open the stream: ``wss://`` + the public host + ``/ws``.

    The public host is ``--proxy`` when given, else the host the webhook was addressed to (a
    tunnel such as ngrok forwards it, or names it in ``X-Forwarded-Host``).
    """
    host = proxy or request.headers.get("x-forwarded-host") or request.headers.get("host", "")
    return f"wss://{host}/ws"


def add_twilio_routes(app: FastAPI, *, proxy: str | None = None) -> None:
    """Register ``POST /``, Twilio's voice webhook, answering with our TwiML.

    Args:
        app: The server's app (the runner's, before ``main()`` adds its own routes).
        proxy: Public host name of the server (``-x/--proxy``), if known.
    """

    @app.post("/", include_in_schema=False)
    async def twilio_voice_webhook(request: Request) -> Response:
        form = await request.form()
        from_number, to_number = form.get("From", ""), form.get("To", "")
        xml = twiml(
            stream_url=stream_url(request, proxy=proxy),
            from_number=from_number if isinstance(from_number, str) else "",
            to_number=to_number if isinstance(to_number, str) else "",
        )
        return Response(content=xml, media_type="application/xml")


def twilio_transport(
    websocket: WebSocket, call_data: CallData, *, settings: BotSettings
) -> FastAPIWebsocketTransport:
    """The transport of one Twilio call, from its parsed ``start`` message.

    The REST hang-up (ending the call on Twilio's side when the bot ends it) is on when
    ``RAPPORT_TWILIO_HANG_UP`` is and credentials are set; without them the bot can still take
    calls, but hanging up is left to the caller.
    """
    hang_up = settings.twilio_hang_up and bool(
        settings.twilio_account_sid and settings.twilio_auth_token and call_data.call_id
    )
    if settings.twilio_hang_up and not hang_up:
        logger.warning("Twilio credentials or call id missing: the bot cannot hang up this call")
    serializer = TwilioFrameSerializer(
        stream_sid=call_data.stream_id or "",
        call_sid=call_data.call_id,
        account_sid=settings.twilio_account_sid if hang_up else None,
        auth_token=settings.twilio_auth_token if hang_up else None,
        base_url=settings.twilio_api_base_url,
        params=TwilioFrameSerializer.InputParams(auto_hang_up=hang_up),
    )
    return FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
        ),
    )
