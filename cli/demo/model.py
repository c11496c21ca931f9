"""A scripted stand-in for Claude, for ``python runner.py demo``: the Messages API on loopback.

The demo runs the real product end to end (the bot's pipeline with the real
``AnthropicLLMService``, the real analysis worker with the real ``AsyncAnthropic`` client), so
what it needs in place of Claude is a server those SDKs can talk to through their ``base_url``:
``POST /v1/messages`` on ``127.0.0.1`` at an ephemeral port, answering as the real API does
(a JSON message, or with ``"stream": true`` the same server-sent events in the same order).
No key is checked and nothing leaves the machine.

What it answers comes from a :class:`Script`: a conversation request gets the reply scripted for
what the caller last said; an analysis request (``tool_choice`` naming the analysis tool) gets
the answer scripted for the call its transcript holds. It is a script player, not a model: the
demo's words are written out in :mod:`cli.demo.week`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web


@dataclass(frozen=True, slots=True)
class ModelReply:
    """One scripted answer: spoken text, then optionally one tool call.

    Attributes:
        text: What the model says (may be empty).
        tool: The tool it calls, if any.
        arguments: The tool's arguments.
    """

    text: str = ""
    tool: str | None = None
    arguments: Mapping[str, Any] = field(default_factory=dict)

    def blocks(self) -> list[dict[str, Any]]:
        """The reply's content blocks, as the Messages API returns them."""
        blocks: list[dict[str, Any]] = [{"type": "text", "text": self.text}] if self.text else []
        if self.tool:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": _new_id("toolu_"),
                    "name": self.tool,
                    "input": dict(self.arguments),
                }
            )
        return blocks

    @property
    def stop_reason(self) -> str:
        """``tool_use`` when the reply calls a tool, else ``end_turn``."""
        return "tool_use" if self.tool else "end_turn"


class Script(Protocol):
    """What the scripted model says to each request (the parsed JSON body)."""

    def reply(self, body: Mapping[str, Any]) -> ModelReply:
        """The answer to one Messages API request."""
        ...


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def _usage(body: Mapping[str, Any], reply: ModelReply) -> dict[str, int]:
    # Plausible counts (about four characters a token) for the call reports' cost lines.
    return {
        "input_tokens": max(1, len(json.dumps(body)) // 4),
        "output_tokens": max(1, len(json.dumps(reply.blocks())) // 4),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _message(body: Mapping[str, Any], reply: ModelReply, *, final: bool) -> dict[str, Any]:
    return {
        "id": _new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": reply.blocks() if final else [],
        "stop_reason": reply.stop_reason if final else None,
        "stop_sequence": None,
        "usage": _usage(body, reply),
    }


def _events(body: Mapping[str, Any], reply: ModelReply) -> Iterator[dict[str, Any]]:
    """The server-sent events of a streamed reply, in the real API's order."""
    yield {"type": "message_start", "message": _message(body, reply, final=False)}
    for index, block in enumerate(reply.blocks()):
        if block["type"] == "text":
            start: dict[str, Any] = {"type": "text", "text": ""}
            delta: dict[str, Any] = {"type": "text_delta", "text": block["text"]}
        else:
            start = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        yield {"type": "content_block_start", "index": index, "content_block": start}
        yield {"type": "content_block_delta", "index": index, "delta": delta}
        yield {"type": "content_block_stop", "index": index}
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": _usage(body, reply)["output_tokens"]},
    }
    yield {"type": "message_stop"}


class ScriptedModel:
    """The Messages API on ``127.0.0.1`` (ephemeral port), answering from ``script``.

    Use as ``async with ScriptedModel(script) as model:`` and give the SDKs ``model.base_url``.
    """

    def __init__(self, script: Script) -> None:
        self._script = script
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._answered = 0
        self._changed = asyncio.Condition()

    @property
    def base_url(self) -> str:
        """The URL to give the Anthropic SDK as ``base_url``."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def answered(self) -> int:
        """How many requests were answered in full so far."""
        return self._answered

    async def wait_answered(self, count: int) -> None:
        """Return once ``count`` requests were answered in full."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._answered >= count)

    async def __aenter__(self) -> ScriptedModel:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not body.get("messages"):
            error = {"type": "invalid_request_error", "message": "messages: Field required"}
            return web.json_response({"type": "error", "error": error}, status=400)
        reply = self._script.reply(body)
        headers = {"request-id": _new_id("req_")}
        if not body.get("stream"):
            response = web.json_response(_message(body, reply, final=True), headers=headers)
            await self._count()
            return response
        stream = web.StreamResponse(
            headers={**headers, "content-type": "text/event-stream; charset=utf-8"}
        )
        await stream.prepare(request)
        for event in _events(body, reply):
            data = json.dumps(event, separators=(",", ":"))
            await stream.write(f"event: {event['type']}\ndata: {data}\n\n".encode())
        await stream.write_eof()
        await self._count()
        return stream

    async def _count(self) -> None:
        async with self._changed:
            self._answered += 1
            self._changed.notify_all()


def last_user_text(body: Mapping[str, Any]) -> str:
    """What the request's last user message said last: its last text block ("" if none)."""
    for message in reversed(body.get("messages", [])):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        texts = [block.get("text", "") for block in content or [] if block.get("type") == "text"]
        return texts[-1] if texts else ""
    return ""
