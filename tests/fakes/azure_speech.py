"""A local fake of Azure's speech synthesis endpoint, as far as its WebSocket handshake.

Reached through the real Azure Speech SDK (and Pipecat's ``AzureTTSService``) by its endpoint:
``AzureTTSService(api_key=..., private_endpoint=fake.endpoint)``. A wrong or missing
``Ocp-Apim-Subscription-Key`` gets Azure's HTTP 401 and error body before any upgrade, which the
SDK reports as a cancelled synthesis ("WebSocket upgrade failed: Authentication error (401)").
The right key gets the WebSocket, closed at once with code 1011: the fake does not speak the
synthesis protocol (USP), so it stands for the service failing mid-synthesis.
"""

from __future__ import annotations

from aiohttp import WSCloseCode, web

from tests.fakes.local_server import LocalServer

#: The message Azure's 401 carries.
ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
    "a valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)


class FakeAzureSpeech(LocalServer):
    """Azure's ``/cognitiveservices/websocket/v1``; ``async with`` starts it on 127.0.0.1.

    Args:
        api_key: The only key accepted.
    """

    def __init__(self, *, api_key: str) -> None:
        super().__init__()
        self._api_key = api_key
        self.refused = 0
        self.accepted = 0

    @property
    def endpoint(self) -> str:
        """What ``AzureTTSService(private_endpoint=...)`` takes (plain ``ws://``, local)."""
        return f"ws://127.0.0.1:{self.port}/cognitiveservices/websocket/v1"

    def route(self, app: web.Application) -> None:
        """``GET /cognitiveservices/websocket/v1`` (the WebSocket handshake)."""
        app.router.add_get("/cognitiveservices/websocket/v1", self._synthesis)

    async def _synthesis(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Ocp-Apim-Subscription-Key") != self._api_key:
            self.refused += 1
            body = {"error": {"code": "401", "message": ACCESS_DENIED}}
            return web.json_response(body, status=401)
        self.accepted += 1
        socket = web.WebSocketResponse(protocols=("USP",))
        await socket.prepare(request)
        await socket.close(code=WSCloseCode.INTERNAL_ERROR, message=b"synthesis failed")
        return socket
