"""A local fake of Deepgram's streaming endpoint, ``wss://api.deepgram.com/v1/listen``.

Reached through the real Deepgram SDK (and Pipecat's ``DeepgramSTTService``) by its
``base_url``: ``DeepgramSTTService(api_key=..., base_url=fake.base_url)``. It answers the
WebSocket handshake as Deepgram does: a wrong or missing ``Authorization: Token <key>`` gets
HTTP 401 with Deepgram's error body and its ``dg-error`` header, before any upgrade; the right
key gets the WebSocket, which takes audio (binary) and control messages (``KeepAlive``,
``Finalize``, ``CloseStream``: the last closes it normally). :meth:`FakeDeepgram.drop` breaks
every open stream with close code 1011, as Deepgram does when it fails mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import uuid

from aiohttp import WSCloseCode, WSMsgType, web

from tests.fakes.local_server import LocalServer


class FakeDeepgram(LocalServer):
    """Deepgram's ``/v1/listen``; ``async with`` starts it on 127.0.0.1, ephemeral port.

    Args:
        api_key: The only key accepted.
    """

    def __init__(self, *, api_key: str) -> None:
        super().__init__()
        self._api_key = api_key
        self.refused = 0
        self.connected = asyncio.Event()
        self.audio_bytes = 0
        self._open: set[web.WebSocketResponse] = set()

    @property
    def base_url(self) -> str:
        """What ``DeepgramSTTService(base_url=...)`` takes (plain ``ws://``, local)."""
        return f"ws://127.0.0.1:{self.port}"

    def route(self, app: web.Application) -> None:
        """``GET /v1/listen`` (the WebSocket handshake)."""
        app.router.add_get("/v1/listen", self._listen)

    async def __aexit__(self, *exc_info: object) -> None:
        for socket in list(self._open):
            await socket.close()
        await super().__aexit__(*exc_info)

    async def drop(self) -> None:
        """Break every open stream (close code 1011, an internal error on Deepgram's side)."""
        for socket in list(self._open):
            await socket.close(code=WSCloseCode.INTERNAL_ERROR, message=b"NET-0001")

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Token {self._api_key}":
            self.refused += 1
            body = {
                "err_code": "INVALID_AUTH",
                "err_msg": "Invalid credentials.",
                "request_id": str(uuid.uuid4()),
            }
            return web.json_response(body, status=401, headers={"dg-error": "Invalid credentials."})
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._open.add(socket)
        self.connected.set()
        try:
            async for message in socket:
                if message.type == WSMsgType.BINARY:
                    self.audio_bytes += len(message.data)
                elif (
                    message.type == WSMsgType.TEXT
                    and json.loads(message.data).get("type") == "CloseStream"
                ):
                    break
        finally:
            self._open.discard(socket)
            await socket.close()
        return socket
