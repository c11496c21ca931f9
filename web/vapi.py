"""Vapi's custom LLM, with Rapport's memory: ``POST /vapi/chat/completions`` and ``/vapi/events``.

Vapi calls a custom LLM over the OpenAI Chat Completions API, sending the call object with each
request (``call.id``, ``call.customer.number``). Here:

- The first request of a Vapi call (or its ``assistant-request``, while the line rings)
  identifies the caller and loads their memory once (:mod:`memory.calls.session`); later requests
  of the call reuse it from a bounded cache, or, in another process, from Redis.
- The conversation goes to Claude through the ``anthropic`` SDK, translated faithfully: system
  messages become ``system`` (after Rapport's prompt with the memory block, rendered as the
  bot renders it), tool calls and results become ``tool_use`` / ``tool_result`` with the same
  ids, a conversation that opens with the assistant's first message opens with the bot's
  "call connected" user turn (the Messages API wants a user turn first).
- Rapport's tools (``save_caller_name``, ``remember``) run here, never in Vapi: when Claude
  calls one, its result goes back to Claude and the reply continues within the same response;
  if nothing was said by the end, the caller hears the tool-silence guard's closing phrase, so
  a turn is never empty. When the LLM fails before the caller heard a word, the answer is HTTP
  503 (Vapi's cue that its LLM failed: it ends the call with an ``*-llm-failed`` reason), never
  a filler line on every turn; such a report is recorded as ``failed: llm unavailable``, first on
  the follow-up list. Vapi's own tools (``endCall``, ``transferCall``...) are passed on as
  OpenAI tool calls for Vapi to run. Vapi's ``maxTokens`` is kept; its ``temperature`` is not
  (this SDK's Messages API takes none), nor its ``model`` (``RAPPORT_LLM_MODEL`` is used).
- ``end-of-call-report`` records what was said and closes the call, queueing its analysis as
  the bot's recorder does; ``assistant-request`` answers with the assistant
  (``RAPPORT_VAPI_ASSISTANT_ID``) and the caller's opening line as its first message.

Every request must carry ``RAPPORT_VAPI_SECRET`` (``X-Vapi-Secret`` or bearer), else 401.
Vapi passes no carrier attestation to a custom LLM, so its callers are ``unverified``: their
memory is served only with ``RAPPORT_UNVERIFIED_CALLERS=full``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from anthropic import APIError
from anthropic.types import (
    MessageParam,
    RawMessageStreamEvent,
    ToolChoiceAutoParam,
    ToolParam,
)
from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse, StreamingResponse
from loguru import logger
from pydantic import BaseModel, ConfigDict

from bot.services import ONE_TOOL_CALL_AT_A_TIME
from bot.tools import REMEMBER, SAVE_CALLER_NAME, CallerTools
from bot.wording import CALL_CONNECTED, opening_line
from memory.calls.session import CallSession, SessionCache
from memory.models import CallTrust, clean_text, service_failed
from memory.upstream import UPSTREAM, Service, failure_kind
from processors.tool_silence import DEFAULT_PHRASES
from web.auth import require_secret
from web.platform_calls import PlatformCalls

#: Tool rounds Rapport runs within one response before it stops asking Claude again.
MAX_TOOL_ROUNDS = 3
#: Reply length when Vapi does not say (``maxTokens`` in its console overrides it).
DEFAULT_MAX_TOKENS = 1024
RAPPORT_TOOLS = {schema.name: schema for schema in (SAVE_CALLER_NAME, REMEMBER)}
#: Which door Vapi's calls come through (their key in Redis, their logs).
DOOR = "vapi"


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class VapiCustomer(_Lenient):
    """Who Vapi is talking to."""

    number: str | None = None


class VapiCall(_Lenient):
    """The call object Vapi sends with each request."""

    id: str
    customer: VapiCustomer | None = None


class ChatRequest(_Lenient):
    """An OpenAI Chat Completions request, as Vapi sends it (call metadata included)."""

    messages: list[dict[str, Any]]
    model: str | None = None
    stream: bool = False
    tools: list[dict[str, Any]] | None = None
    max_tokens: int | None = None
    call: VapiCall | None = None
    customer: VapiCustomer | None = None


@dataclass(frozen=True, slots=True)
class _Text:
    text: str


@dataclass(frozen=True, slots=True)
class _ToolCall:
    id: str
    name: str
    arguments: str


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        parsed = json.loads(raw) if isinstance(raw, str) and raw.strip() else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def to_anthropic(messages: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """OpenAI chat messages as the Messages API takes them: ``(system texts, messages)``.

    System (and developer) messages become system text; tool calls become ``tool_use`` and
    tool messages ``tool_result`` blocks with the same ids (results first in their user turn);
    a call or a result without its partner (an interrupted turn) is dropped, as are empty
    texts; turns of one role are merged, and a conversation opening with the assistant opens
    with the bot's :data:`bot.wording.CALL_CONNECTED` user turn.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        text = _text_of(message.get("content"))
        blocks: list[dict[str, Any]] = []
        if role in ("system", "developer"):
            if text.strip():
                system.append(text.strip())
            continue
        if role == "tool":
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": str(message.get("tool_call_id", "")),
            }
            if text.strip():
                result["content"] = text
            blocks.append(result)
            role = "user"
        elif role in ("user", "assistant"):
            if text.strip():
                blocks.append({"type": "text", "text": text})
            for call in message.get("tool_calls") or [] if role == "assistant" else []:
                function = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": str(call.get("id", "")),
                        "name": str(function.get("name", "")),
                        "input": _arguments(function.get("arguments")),
                    }
                )
        if blocks:
            _append(turns, str(role), blocks)
    turns = _paired(turns)
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": CALL_CONNECTED}]})
    last = turns[-1]
    if last["role"] == "assistant" and last["content"][-1]["type"] == "text":
        last["content"][-1]["text"] = last["content"][-1]["text"].rstrip()
    return system, turns


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": list(blocks)})


def _paired(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep each tool_use only with its tool_result in the next turn, and the other way round."""
    kept: list[dict[str, Any]] = []
    for index, turn in enumerate(turns):
        blocks = turn["content"]
        if turn["role"] == "assistant":
            following = turns[index + 1]["content"] if index + 1 < len(turns) else []
            answered = {b["tool_use_id"] for b in following if b["type"] == "tool_result"}
            blocks = [b for b in blocks if b["type"] != "tool_use" or b["id"] in answered]
        else:
            previous = kept[-1]["content"] if kept and kept[-1]["role"] == "assistant" else []
            asked = {b["id"] for b in previous if b["type"] == "tool_use"}
            results = [
                b for b in blocks if b["type"] == "tool_result" and b["tool_use_id"] in asked
            ]
            blocks = results + [b for b in blocks if b["type"] != "tool_result"]
        if blocks:
            _append(kept, turn["role"], blocks)
    return kept


def anthropic_tools(openai_tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Rapport's tools, then the platform's (OpenAI function tools; Rapport's names win)."""
    tools = [
        {
            "name": schema.name,
            "description": schema.description,
            "input_schema": {
                "type": "object",
                "properties": schema.properties,
                "required": schema.required,
            },
        }
        for schema in RAPPORT_TOOLS.values()
    ]
    for tool in openai_tools or []:
        function = tool.get("function") or {}
        name = function.get("name")
        if tool.get("type", "function") != "function" or not name or name in RAPPORT_TOOLS:
            continue
        parameters = function.get("parameters") or {}
        schema = parameters if parameters.get("type") == "object" else {"type": "object"}
        entry = {"name": name, "input_schema": schema}
        if function.get("description"):
            entry["description"] = function["description"]
        tools.append(entry)
    return tools


def vapi_router(
    calls: PlatformCalls, *, cache: SessionCache[asyncio.Task[CallSession]]
) -> APIRouter:
    """The Vapi endpoints, refusing every request without ``RAPPORT_VAPI_SECRET``.

    Args:
        calls: The agent, the process's memory and Anthropic client.
        cache: The open Vapi calls of this process, by Vapi call id.
    """
    secret = calls.settings.vapi_secret or ""
    router = APIRouter(
        prefix="/vapi",
        tags=["vapi"],
        dependencies=[Depends(require_secret(secret, headers=("x-vapi-secret",), realm="vapi"))],
    )
    door = _VapiDoor(calls, cache)

    @router.post("/chat/completions", summary="Vapi custom LLM (OpenAI Chat Completions)")
    async def chat_completions(request: ChatRequest) -> Any:
        session = await door.session(request.call, request.customer)
        try:
            pieces = await _under_way(door.complete(session, request))
        except LLMUnavailableError:
            # Before any word: an HTTP error is Vapi's cue that its LLM failed (its call then
            # ends with an llm-failed reason, reported to /vapi/events), not a filler each turn.
            return JSONResponse(LLM_UNAVAILABLE, status_code=503)
        reply_id = f"chatcmpl-{uuid.uuid4().hex}"
        if request.stream:
            return StreamingResponse(
                _sse(pieces, reply_id=reply_id, model=door.model),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache"},
            )
        return JSONResponse(await _completion(pieces, reply_id=reply_id, model=door.model))

    @router.post("/events", summary="Vapi server messages (end-of-call-report, assistant-request)")
    async def events(body: dict[str, Any]) -> dict[str, Any]:
        message = body.get("message")
        if not isinstance(message, dict):
            raise HTTPException(status_code=422, detail="a Vapi server message has a `message`")
        kind = message.get("type")
        if kind == "end-of-call-report":
            await door.end(message)
            return {}
        if kind == "assistant-request":
            return await door.assistant(message)
        return {}

    return router


class _VapiDoor:
    def __init__(self, calls: PlatformCalls, cache: SessionCache[asyncio.Task[CallSession]]):
        self._calls = calls
        self._cache = cache
        self.model = calls.settings.llm_model
        self._opening = functools.partial(opening_line, business_name=calls.settings.business_name)

    async def session(self, call: Any, customer: VapiCustomer | None = None) -> CallSession:
        """The call's session: loaded once per Vapi call id, then from the cache."""
        parsed = _call_of(call)
        number = _number(parsed, customer)
        if parsed is None:  # no call metadata (Vapi's metadataSendMode "off"): nothing cached
            return await self._calls.open(None, call_id=_fresh_id(), trust=_trust(None), door=DOOR)
        task = self._cache.get(parsed.id)
        if task is None or (task.done() and task.exception() is not None):
            task = asyncio.ensure_future(self._open_or_resume(parsed.id, number))
            self._cache.put(parsed.id, task)
        return await asyncio.shield(task)

    async def _open_or_resume(self, call_id: str, number: str | None) -> CallSession:
        """The call another process opened, or else a call opened here."""
        found = await self._calls.find(DOOR, call_id)
        if found is not None:
            return found
        return await self._calls.open(number, call_id=call_id, trust=_trust(number), door=DOOR)

    async def complete(
        self, session: CallSession, request: ChatRequest
    ) -> AsyncIterator[_Text | _ToolCall]:
        """Claude's reply, Rapport's tools run here, the caller never left with an empty turn."""
        system, messages = to_anthropic(request.messages)
        prompt = "\n\n".join([session.system_prompt(self._calls.template), *system])
        tools = anthropic_tools(request.tools)
        spoken = _Spoken()
        runner = self._calls.tools(session)
        for round_number in range(MAX_TOOL_ROUNDS + 1):
            reply = _Reply()
            try:
                async for text in self._stream(reply, prompt, messages, tools, request.max_tokens):
                    yield _Text(spoken.said(text))
            except APIError as e:
                UPSTREAM.failed(Service.LLM, failure_kind(e))
                if not spoken.heard:
                    raise LLMUnavailableError from e
                break
            UPSTREAM.succeeded(Service.LLM)
            spoken.round_over()
            uses = reply.tool_uses()
            theirs = [use for use in uses if use["name"] not in RAPPORT_TOOLS]
            if theirs:
                for use in theirs:
                    yield _ToolCall(
                        id=use["id"], name=use["name"], arguments=json.dumps(use["input"])
                    )
                return
            if not uses or round_number == MAX_TOOL_ROUNDS:
                break
            messages = [*messages, *await _tool_round(reply, uses, runner)]
        if not spoken.heard:
            phrases = DEFAULT_PHRASES.get(session.language, DEFAULT_PHRASES["en"])
            yield _Text(phrases.closing)

    async def _stream(
        self,
        reply: _Reply,
        prompt: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        max_tokens: int | None,
    ) -> AsyncIterator[str]:
        """One request to Claude, streamed: its text as it comes; ``reply`` keeps every block."""
        # The raw events, not ``messages.stream()``: its snapshot of the whole message is
        # rebuilt on every event, and the first words must not wait on that.
        events = await self._calls.anthropic().messages.create(
            model=self.model,
            max_tokens=max_tokens or DEFAULT_MAX_TOKENS,
            system=prompt,
            messages=cast(list[MessageParam], messages),
            tools=cast(list[ToolParam], tools),
            tool_choice=cast(ToolChoiceAutoParam, ONE_TOOL_CALL_AT_A_TIME),
            stream=True,
        )
        async with events:  # closed early if the caller interrupts
            async for event in events:
                if text := reply.take(event):
                    yield text

    async def end(self, message: Mapping[str, Any]) -> None:
        """Record an ended call's transcript and close it (once, however often Vapi reports)."""
        parsed = _call_of(message.get("call"))
        if parsed is None:
            logger.warning("A Vapi end-of-call report without a call id was ignored")
            return
        task = self._cache.get(parsed.id)  # kept, ended: a duplicate report finds it so
        cached = await asyncio.shield(task) if task is not None else None
        # Ended in another process meanwhile? Or opened in another process: resumed here.
        session = await self._calls.find(DOOR, parsed.id, cached)
        if session is None:  # known to no process (expired, or before Redis kept calls)
            number = _number(parsed, _customer(message.get("customer")))
            session = await self._calls.open(
                number, call_id=parsed.id, trust=_trust(number), door=DOOR
            )
            if session.caller is not None and await self._closed_already(session):
                return
        if session.ended:
            return
        await session.add_turns(_spoken(message))
        reason = _ended_reason(message.get("endedReason"))
        await self._calls.end(session, reason, door=DOOR)

    async def _closed_already(self, session: CallSession) -> bool:
        memory = self._calls.memory()
        if memory is None or session.caller is None:
            return False
        record = await memory.runtime.store.get_call(session.caller, session.call_id)
        return record is not None and record.status != "open"

    async def assistant(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """Answer an ``assistant-request``: the assistant, opening with the caller's line."""
        assistant_id = self._calls.settings.vapi_assistant_id
        if not assistant_id:
            logger.warning(
                "A Vapi assistant-request came in, but RAPPORT_VAPI_ASSISTANT_ID is unset"
            )
            return {"error": "This line is not configured to take calls right now."}
        # Memory starts loading now, while the line rings; the first turn finds it cached.
        session = await self.session(message.get("call"), _customer(message.get("customer")))
        return {
            "assistantId": assistant_id,
            "assistantOverrides": {"firstMessage": self._opening(session.memory, session.language)},
        }


class LLMUnavailableError(Exception):
    """The LLM failed before the caller heard a word of the reply."""


#: The body of the 503 answered then, as OpenAI-compatible servers word an error.
LLM_UNAVAILABLE = {
    "error": {
        "message": "The LLM behind Rapport is unavailable; see the server's log and /health.",
        "type": "server_error",
        "code": "llm_unavailable",
    }
}


async def _under_way(
    pieces: AsyncIterator[_Text | _ToolCall],
) -> AsyncIterator[_Text | _ToolCall]:
    """``pieces``, the first one included, once that first one has come.

    Waiting for it before answering lets a failure before any word still be an HTTP error.

    Raises:
        LLMUnavailableError: The LLM failed before the first piece.
    """
    first = await anext(pieces)

    async def replayed() -> AsyncIterator[_Text | _ToolCall]:
        yield first
        async for piece in pieces:
            yield piece

    return replayed()


class _Reply:
    """One response of Claude as it streams: its blocks, as the next request quotes them."""

    def __init__(self) -> None:
        self.blocks: list[dict[str, Any]] = []
        self._json: dict[int, list[str]] = {}  # a tool_use block's input, as it arrives

    def take(self, event: RawMessageStreamEvent) -> str:
        """Keep what ``event`` adds; return the text it says ("" when none)."""
        if event.type == "content_block_start":
            block = event.content_block
            if block.type == "tool_use":
                self.blocks.append({"type": "tool_use", "id": block.id, "name": block.name})
                self._json[len(self.blocks) - 1] = []
            else:
                self.blocks.append({"type": block.type, "text": ""})
        elif event.type == "content_block_delta" and self.blocks:
            delta = event.delta
            if delta.type == "text_delta" and delta.text:
                self.blocks[-1]["text"] = self.blocks[-1].get("text", "") + delta.text
                return delta.text
            if delta.type == "input_json_delta" and len(self.blocks) - 1 in self._json:
                self._json[len(self.blocks) - 1].append(delta.partial_json)
        return ""

    def tool_uses(self) -> list[dict[str, Any]]:
        """The tool calls of the response, their inputs parsed."""
        for index, parts in self._json.items():
            self.blocks[index]["input"] = _arguments("".join(parts))
        return [block for block in self.blocks if block["type"] == "tool_use"]


class _Spoken:
    """What the caller has heard of the reply so far, across its tool rounds."""

    def __init__(self) -> None:
        self.heard = False
        self._spoke_last = False  # the reply so far ends in text (a new round starts with a space)
        self._first = True  # no text yet in this round

    def said(self, text: str) -> str:
        """``text`` as it goes out (a space after the last round's words)."""
        if self._first and self._spoke_last and not text[0].isspace():
            text = " " + text
        self._first = False
        self.heard = self.heard or bool(text.strip())
        self._spoke_last = True
        return text

    def round_over(self) -> None:
        """A response ended; the next one starts a new round."""
        self._first = True


async def _tool_round(
    reply: _Reply, uses: list[dict[str, Any]], runner: CallerTools
) -> list[dict[str, Any]]:
    """The reply's tool calls and their results (Rapport's tools, run here), as two turns."""
    asked = [
        block
        for block in reply.blocks
        if block["type"] == "tool_use" or (block["type"] == "text" and block["text"].strip())
    ]
    results = [
        {
            "type": "tool_result",
            "tool_use_id": use["id"],
            "content": json.dumps(await runner.run(use["name"], use["input"])),
        }
        for use in uses
    ]
    return [{"role": "assistant", "content": asked}, {"role": "user", "content": results}]


#: Vapi's ended reasons for a failing service (``pipeline-error-custom-llm-llm-failed``, ...),
#: by the part of the reason that names it.
_FAILED_SERVICES = {"llm-failed": "llm", "transcriber-failed": "stt", "voice-failed": "tts"}


def _ended_reason(raw: Any) -> str:
    """How a Vapi call ended, as recorded: Vapi's reason, or a failed service and Vapi's reason."""
    reason = clean_text(str(raw or "ended"), 200)
    for marker, service in _FAILED_SERVICES.items():
        if marker in reason:
            return f"{service_failed(service)} ({reason})"
    return reason


def _call_of(raw: Any) -> VapiCall | None:
    if isinstance(raw, VapiCall):
        return raw
    if isinstance(raw, dict) and isinstance(raw.get("id"), str) and raw["id"]:
        return VapiCall.model_validate(raw)
    return None


def _customer(raw: Any) -> VapiCustomer | None:
    return VapiCustomer.model_validate(raw) if isinstance(raw, dict) else None


def _number(call: VapiCall | None, customer: VapiCustomer | None) -> str | None:
    if call is not None and call.customer is not None and call.customer.number:
        return call.customer.number
    return customer.number if customer is not None else None


def _trust(number: str | None) -> CallTrust:
    # Vapi authenticated itself, but the caller id it relays is only claimed: it passes no
    # carrier attestation to a custom LLM.
    return CallTrust.UNVERIFIED if number else CallTrust.ANONYMOUS


def _fresh_id() -> str:
    return f"vapi-{uuid.uuid4().hex}"


_ROLES: dict[str, Literal["user", "assistant"]] = {
    "user": "user",
    "bot": "assistant",
    "assistant": "assistant",
}


def _spoken(message: Mapping[str, Any]) -> list[tuple[Literal["user", "assistant"], str]]:
    """What was said on the call, in order, from the report's messages (or its transcript)."""
    raw = message.get("artifact")
    artifact: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    messages = artifact.get("messages") or message.get("messages") or []
    said = [
        (_ROLES[m["role"]], text)
        for m in messages
        if isinstance(m, dict) and m.get("role") in _ROLES
        if (text := str(m.get("message") or _text_of(m.get("content"))).strip())
    ]
    if said:
        return said
    transcript = artifact.get("transcript") or message.get("transcript") or ""
    for line in str(transcript).splitlines():
        speaker, _, text = line.partition(":")
        role = {"ai": "assistant", "bot": "assistant", "assistant": "assistant", "user": "user"}
        if speaker.strip().lower() in role and text.strip():
            said.append((_ROLES[role[speaker.strip().lower()]], text.strip()))
    return said


def _chunk(reply_id: str, model: str, delta: dict[str, Any], finish: str | None) -> str:
    body = {
        "id": reply_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"


async def _sse(
    pieces: AsyncIterator[_Text | _ToolCall], *, reply_id: str, model: str
) -> AsyncIterator[str]:
    role_sent = False
    calls = 0
    async for piece in pieces:
        delta: dict[str, Any] = {} if role_sent else {"role": "assistant"}
        role_sent = True
        if isinstance(piece, _Text):
            delta["content"] = piece.text
        else:
            delta["tool_calls"] = [
                {
                    "index": calls,
                    "id": piece.id,
                    "type": "function",
                    "function": {"name": piece.name, "arguments": piece.arguments},
                }
            ]
            calls += 1
        yield _chunk(reply_id, model, delta, None)
    yield _chunk(reply_id, model, {}, "tool_calls" if calls else "stop")
    yield "data: [DONE]\n\n"


async def _completion(
    pieces: AsyncIterator[_Text | _ToolCall], *, reply_id: str, model: str
) -> dict[str, Any]:
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    async for piece in pieces:
        if isinstance(piece, _Text):
            texts.append(piece.text)
        else:
            function = {"name": piece.name, "arguments": piece.arguments}
            tool_calls.append({"id": piece.id, "type": "function", "function": function})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": reply_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
            }
        ],
    }
