"""Daily dial-in: only Daily may announce a call, when the dial-in configuration has a secret.

Pipecat's runner serves ``POST /daily-dialin-webhook``, creates a room for the held call and
answers with the room's URL and token: whoever can post there could join a room as any caller.
:class:`DialinSignatureCheck` sits in front of it as ASGI middleware: with
``RAPPORT_DAILY_DIALIN_HMAC`` set, a request without Daily's valid signature gets 401 and never
reaches the runner.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from loguru import logger

from bot.asgi import ASGIApp, Message, Receive, Scope, Send
from bot.trust import daily_signature_valid

DIALIN_PATH = "/daily-dialin-webhook"
#: Largest dial-in webhook body read; Daily's are a few hundred bytes.
MAX_BODY_BYTES = 64 * 1024


class DialinSignatureCheck:
    """ASGI middleware refusing unsigned or badly signed Daily dial-in webhooks.

    Args:
        app: The application behind it.
        secret: The pinless dial-in configuration's ``hmac`` (base64).
    """

    def __init__(self, app: ASGIApp, *, secret: str) -> None:
        self._app = app
        self._secret = secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check dial-in webhooks; pass everything else through untouched."""
        if scope["type"] != "http" or scope["path"] != DIALIN_PATH or scope["method"] != "POST":
            await self._app(scope, receive, send)
            return
        body = await _read_body(receive)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if body is None or not daily_signature_valid(
            secret=self._secret,
            body=body,
            timestamp=headers.get("x-pinless-timestamp"),
            signature=headers.get("x-pinless-signature"),
        ):
            logger.warning("Refused a Daily dial-in webhook without a valid signature")
            await JSONResponse({"detail": "invalid signature"}, status_code=401)(
                scope, receive, send
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self._app(scope, replay, send)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None past :data:`MAX_BODY_BYTES`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
