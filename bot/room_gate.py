"""The local WebRTC test room is served only where it is wanted.

Pipecat's development runner mounts the prebuilt client (``/client``, ``GET /``) and the WebRTC
offer routes whatever ``-t`` says. A server started for a phone line (``-t twilio`` or
``-t daily``, as the Docker image is) has no business offering a browser room to whoever finds
it: :class:`RoomGate` answers those routes with 404 there.
"""

from __future__ import annotations

from fastapi.responses import PlainTextResponse

from bot.asgi import ASGIApp, Receive, Scope, Send

#: Transports whose server also serves the local room.
ROOM_TRANSPORTS = (None, "webrtc")


def is_room_route(method: str, path: str) -> bool:
    """Whether a request belongs to the local room: its page, its client, its WebRTC offers."""
    return (
        (method == "GET" and path == "/")
        or path == "/client"
        or path.startswith("/client/")
        or path.endswith("/api/offer")
    )


class RoomGate:
    """ASGI middleware answering the local room's routes with 404.

    Args:
        app: The application behind it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse the room's routes; pass everything else through."""
        if scope["type"] == "http" and is_room_route(scope["method"], scope["path"]):
            await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
            return
        await self._app(scope, receive, send)
