"""A local fake of the Anthropic Messages API (`POST /v1/messages`), reached through real SDKs.

The fake speaks the wire protocol of the real API: the same headers are required, the same JSON
bodies come back, and streaming requests get the same server-sent events in the same order
(`message_start`, `ping`, `content_block_start` / `content_block_delta` / `content_block_stop`
per block, `message_delta` with the stop reason and usage, `message_stop`). Errors use the real
body shape (`{"type": "error", "error": {"type": ..., "message": ...}}`) and status codes, with
`retry-after` where the real API sends it, so the SDK's own retry logic runs against it.

Requests are held to the real API's rules before anything else sees them (`request_problem`):
one the real API refuses (no messages, a first message not from the user, an empty text block,
an unpaired `tool_use` / `tool_result`, a bad tool name or `input_schema`, trailing whitespace
after a prefill...) gets the real 400 `invalid_request_error` and its message, and fails the
test it happened in unless the test takes it (`take_rejections()`).

Behaviour is scripted: queue replies with `script()` (or answer from a `handler`), and assert on
`requests`, which records every request received (headers and JSON body).

    async with FakeAnthropic() as fake:
        fake.script(Reply.tool_call("remember", {"fact": "Vegetarian"}), Reply.text("Done."))
        client = AsyncAnthropic(api_key="test-key", base_url=fake.base_url)
        ...
        assert fake.requests[1].tool_results() == ['{"saved": true}']

Point `AnthropicLLMService` at it with `client=AsyncAnthropic(api_key=..., base_url=fake.base_url)`.
Pipecat 1.14's `AnthropicLLMService` runs only the last `tool_use` block of a response, so script
one tool call per reply when driving it.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import secrets
import string
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, TypeAlias

from aiohttp import web

_ID_ALPHABET = string.ascii_letters + string.digits


def _new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


@dataclass(frozen=True)
class Text:
    """A `text` content block of a scripted reply."""

    text: str


@dataclass(frozen=True)
class ToolUse:
    """A `tool_use` content block of a scripted reply.

    Attributes:
        name: The tool the model calls.
        input: The tool's arguments.
        id: The tool-use id (`toolu_…`), generated when not given.
    """

    name: str
    input: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: _new_id("toolu_"))


@dataclass(frozen=True)
class Reply:
    """A successful message the fake returns (as JSON, or as SSE when the request streams).

    Attributes:
        content: The content blocks, in order. Empty is a valid (empty) response.
        stop_reason: Defaults to `tool_use` when a block calls a tool, else `end_turn`.
        delay: Seconds to wait before answering (time to first byte).
    """

    content: Sequence[Text | ToolUse] = ()
    stop_reason: str | None = None
    delay: float = 0.0

    @classmethod
    def text(cls, text: str, *, delay: float = 0.0) -> Reply:
        """A reply with one text block (which may hold malformed JSON, for parser tests)."""
        return cls(content=(Text(text),), delay=delay)

    @classmethod
    def tool_call(
        cls,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        text: str | None = None,
        delay: float = 0.0,
    ) -> Reply:
        """A reply calling one tool, optionally preceded by spoken text."""
        blocks: list[Text | ToolUse] = [Text(text)] if text else []
        blocks.append(ToolUse(name, dict(arguments or {})))
        return cls(content=tuple(blocks), delay=delay)

    @classmethod
    def empty(cls, *, delay: float = 0.0) -> Reply:
        """A reply with no content blocks (what Claude may return after a tool result)."""
        return cls(content=(), delay=delay)

    @property
    def effective_stop_reason(self) -> str:
        """The stop reason sent to the client."""
        if self.stop_reason:
            return self.stop_reason
        return "tool_use" if any(isinstance(b, ToolUse) for b in self.content) else "end_turn"


@dataclass(frozen=True)
class ErrorReply:
    """An API error the fake returns, with the real body shape.

    Attributes:
        status: HTTP status (429, 500, 529, ...).
        error_type: The `error.type` (`rate_limit_error`, `overloaded_error`, `api_error`, ...).
        message: The `error.message`.
        retry_after: Seconds sent in the `retry-after` header, if any.
        should_retry: Sent as the `x-should-retry` header (which the SDK obeys), if set.
        during_stream: For a streaming request, answer 200 and send the error as an SSE `error`
            event after `message_start` (how the real API reports overload mid-stream).
        delay: Seconds to wait before answering.
    """

    status: int
    error_type: str
    message: str
    retry_after: float | None = None
    should_retry: bool | None = None
    during_stream: bool = False
    delay: float = 0.0

    @classmethod
    def overloaded(cls, *, during_stream: bool = False, delay: float = 0.0) -> ErrorReply:
        """529 `overloaded_error`."""
        return cls(529, "overloaded_error", "Overloaded", during_stream=during_stream, delay=delay)

    @classmethod
    def rate_limited(cls, *, retry_after: float = 1.0, delay: float = 0.0) -> ErrorReply:
        """429 `rate_limit_error` with a `retry-after` header."""
        message = "Number of request tokens has exceeded your per-minute rate limit"
        return cls(429, "rate_limit_error", message, retry_after=retry_after, delay=delay)

    @classmethod
    def server_error(cls, *, delay: float = 0.0) -> ErrorReply:
        """500 `api_error`."""
        return cls(500, "api_error", "Internal server error", delay=delay)

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return {
            "type": "error",
            "error": {"type": self.error_type, "message": self.message},
            "request_id": _new_id("req_"),
        }


Response: TypeAlias = Reply | ErrorReply
Handler: TypeAlias = Callable[["RecordedRequest"], Response | Awaitable[Response]]


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received.

    Attributes:
        method: HTTP method.
        path: URL path (`/v1/messages`).
        query: Query parameters (the SDK's beta client adds `beta=true`).
        headers: Request headers, names lower-cased.
        body: The parsed JSON body, or None when it was not JSON.
        usage: The ``usage`` the fake answered with (empty until it answered successfully).
    """

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Any
    usage: dict[str, int] = field(default_factory=dict, compare=False)

    @property
    def stream(self) -> bool:
        """Whether the client asked for a streamed response."""
        return isinstance(self.body, dict) and bool(self.body.get("stream"))

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The request's `messages`."""
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []

    @property
    def system_text(self) -> str:
        """The system prompt as plain text (string or text blocks joined)."""
        system = self.body.get("system", "") if isinstance(self.body, dict) else ""
        if isinstance(system, str):
            return system
        return "\n".join(block.get("text", "") for block in system if isinstance(block, dict))

    @property
    def tool_names(self) -> list[str]:
        """Names of the tools offered to the model."""
        tools = self.body.get("tools", []) if isinstance(self.body, dict) else []
        return [tool.get("name", "") for tool in tools]

    def blocks(self, block_type: str) -> Iterator[dict[str, Any]]:
        """Every content block of the given type across all messages, in order."""
        for message in self.messages:
            content = message.get("content")
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            yield from (b for b in content or [] if b.get("type") == block_type)

    def tool_results(self) -> list[str]:
        """The content of every `tool_result` block, as text, in order."""
        results = []
        for block in self.blocks("tool_result"):
            content = block.get("content", "")
            if isinstance(content, list):
                content = "".join(part.get("text", "") for part in content)
            results.append(content)
        return results


@dataclass(frozen=True)
class Rejection:
    """A request the fake refused as invalid, as the real API would (400 invalid_request_error).

    Attributes:
        request: The request refused.
        message: The `error.message` sent back.
    """

    request: RecordedRequest
    message: str


class InvalidRequestsError(AssertionError):
    """Requests the real API would refuse reached the fake, and no test took them."""


class FakeAnthropic:
    """A local HTTP server speaking the Anthropic Messages API on 127.0.0.1, ephemeral port.

    Responses come from the script queue (`script()`), then from `handler`; with neither,
    the fake answers 500 with `x-should-retry: false` so a missing script fails fast.

    Every request is first checked against the real API's request rules (`request_problem`):
    one that breaks them gets the real 400 `invalid_request_error` and is kept in `rejections`.
    A rejection fails the test that caused it (`assert_no_rejections`, run after every test by
    `tests/conftest.py` and by `close()`) unless the test takes it with `take_rejections()`,
    which a test sending an invalid request on purpose does to assert on it.
    """

    _running: ClassVar[set[FakeAnthropic]] = set()

    def __init__(
        self,
        *,
        api_key: str | None = None,
        handler: Handler | None = None,
        chunk_chars: int = 8,
    ) -> None:
        """Create the fake (not yet listening: use `async with` or `start()`).

        Args:
            api_key: When set, requests must carry exactly this `x-api-key` (else 401).
            handler: Answers requests once the script queue is empty.
            chunk_chars: Size of the text and JSON pieces of a streamed reply.
        """
        self._api_key = api_key
        self._handler = handler
        self._chunk_chars = chunk_chars
        self._script: deque[Response] = deque()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self.requests: list[RecordedRequest] = []
        self.rejections: list[Rejection] = []
        self._untaken: list[Rejection] = []

    @property
    def base_url(self) -> str:
        """The URL to give the SDK as `base_url`."""
        if not self._port:
            raise RuntimeError("FakeAnthropic is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def pending(self) -> int:
        """How many scripted responses are still queued."""
        return len(self._script)

    def script(self, *responses: Response) -> None:
        """Queue responses, served one per request in order."""
        self._script.extend(responses)

    def take_rejections(self) -> list[Rejection]:
        """The rejections since the last call, which then no longer fail the test."""
        taken, self._untaken = self._untaken, []
        return taken

    def assert_no_rejections(self) -> None:
        """Raise `InvalidRequestsError` naming every rejection not taken (each reported once)."""
        untaken = self.take_rejections()
        if untaken:
            numbers = {id(request): n for n, request in enumerate(self.requests)}
            lines = "\n".join(f"  request {numbers[id(r.request)]}: {r.message}" for r in untaken)
            raise InvalidRequestsError(
                f"the real Anthropic API would refuse {len(untaken)} request(s):\n{lines}"
            )

    @classmethod
    def running(cls) -> list[FakeAnthropic]:
        """Every fake started and not yet closed."""
        return list(cls._running)

    async def start(self) -> None:
        """Start listening."""
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        FakeAnthropic._running.add(self)

    async def close(self) -> None:
        """Stop listening and drop open connections; then fail on any rejection not taken.

        Raises:
            InvalidRequestsError: A request was refused as invalid and no test took it.
        """
        if self._runner:
            await self._runner.cleanup()
            self._runner = None
        FakeAnthropic._running.discard(self)
        self.assert_no_rejections()

    async def __aenter__(self) -> FakeAnthropic:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        return _error_response(ErrorReply(404, "not_found_error", "Not Found"))

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        problem = _check_request(recorded, self._api_key)
        if problem:
            if problem.error_type == "invalid_request_error":
                rejection = Rejection(recorded, problem.message)
                self.rejections.append(rejection)
                self._untaken.append(rejection)
            return _error_response(problem)
        response = await self._next_response(recorded)
        if response.delay:
            await asyncio.sleep(response.delay)
        if isinstance(response, ErrorReply):
            if recorded.stream and response.during_stream:
                return await self._stream(request, recorded, Reply(), failure=response)
            return _error_response(response)
        if recorded.stream:
            return await self._stream(request, recorded, response)
        return web.json_response(
            _message(
                recorded,
                response,
                blocks=_content_json(response),
                stop_reason=response.effective_stop_reason,
            ),
            headers={"request-id": _new_id("req_")},
        )

    async def _record(self, request: web.Request) -> RecordedRequest:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={name.lower(): value for name, value in request.headers.items()},
            body=body,
        )
        self.requests.append(recorded)
        return recorded

    async def _next_response(self, recorded: RecordedRequest) -> Response:
        if self._script:
            return self._script.popleft()
        if self._handler:
            response = self._handler(recorded)
            return await response if inspect.isawaitable(response) else response
        return ErrorReply(
            500, "api_error", "FakeAnthropic: no scripted response left", should_retry=False
        )

    async def _stream(
        self,
        request: web.Request,
        recorded: RecordedRequest,
        reply: Reply,
        *,
        failure: ErrorReply | None = None,
    ) -> web.StreamResponse:
        stream = web.StreamResponse(
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "request-id": _new_id("req_"),
            }
        )
        await stream.prepare(request)
        events = self._events(recorded, reply, failure)
        try:
            for event in events:
                data = json.dumps(event, separators=(",", ":"))
                await stream.write(f"event: {event['type']}\ndata: {data}\n\n".encode())
            await stream.write_eof()
        except ConnectionError:
            pass  # The client went away mid-stream (an interruption): nothing left to send.
        return stream

    def _events(
        self, recorded: RecordedRequest, reply: Reply, failure: ErrorReply | None
    ) -> Iterator[dict[str, Any]]:
        start = _message(recorded, reply, blocks=[], stop_reason=None)
        start["usage"]["output_tokens"] = 1
        yield {"type": "message_start", "message": start}
        yield {"type": "ping"}
        if failure:
            yield failure.body()
            return
        for index, block in enumerate(reply.content):
            if isinstance(block, Text):
                opening: dict[str, Any] = {"type": "text", "text": ""}
                pieces = self._pieces(block.text)
                deltas = [{"type": "text_delta", "text": piece} for piece in pieces]
            else:
                opening = {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}
                pieces = ["", *self._pieces(json.dumps(dict(block.input)))]
                deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in pieces]
            yield {"type": "content_block_start", "index": index, "content_block": opening}
            for delta in deltas:
                yield {"type": "content_block_delta", "index": index, "delta": delta}
            yield {"type": "content_block_stop", "index": index}
        yield {
            "type": "message_delta",
            "delta": {"stop_reason": reply.effective_stop_reason, "stop_sequence": None},
            "usage": _usage(recorded, reply),
        }
        yield {"type": "message_stop"}

    def _pieces(self, text: str) -> list[str]:
        size = self._chunk_chars
        return [text[i : i + size] for i in range(0, len(text), size)]


def _content_json(reply: Reply) -> list[dict[str, Any]]:
    return [
        {"type": "text", "text": block.text}
        if isinstance(block, Text)
        else {"type": "tool_use", "id": block.id, "name": block.name, "input": dict(block.input)}
        for block in reply.content
    ]


def _usage(recorded: RecordedRequest, reply: Reply) -> dict[str, int]:
    # Roughly four characters a token: plausible numbers, never zero.
    produced = sum(len(json.dumps(asdict(block))) for block in reply.content)
    recorded.usage.update(
        input_tokens=max(1, len(json.dumps(recorded.body)) // 4),
        cache_creation_input_tokens=0,
        cache_read_input_tokens=0,
        output_tokens=max(1, produced // 4),
    )
    return dict(recorded.usage)


def _message(
    recorded: RecordedRequest,
    reply: Reply,
    *,
    blocks: list[dict[str, Any]],
    stop_reason: str | None,
) -> dict[str, Any]:
    return {
        "id": _new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": recorded.body.get("model"),
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _usage(recorded, reply),
    }


def _error_response(error: ErrorReply) -> web.Response:
    headers = {"request-id": _new_id("req_")}
    if error.retry_after is not None:
        headers["retry-after"] = f"{error.retry_after:g}"
    if error.should_retry is not None:
        headers["x-should-retry"] = "true" if error.should_retry else "false"
    return web.json_response(error.body(), status=error.status, headers=headers)


def _invalid(message: str) -> ErrorReply:
    return ErrorReply(400, "invalid_request_error", message)


def _check_request(recorded: RecordedRequest, api_key: str | None) -> ErrorReply | None:
    """What the real API would reject this request for, if anything (run on every request)."""
    key = recorded.headers.get("x-api-key")
    if not key and not recorded.headers.get("authorization"):
        return ErrorReply(401, "authentication_error", "x-api-key header is required")
    if api_key is not None and key != api_key:
        return ErrorReply(401, "authentication_error", "invalid x-api-key")
    if not recorded.headers.get("anthropic-version"):
        return _invalid("anthropic-version: header is required")
    problem = request_problem(recorded.body)
    return _invalid(problem) if problem else None


def request_problem(body: Any) -> str | None:
    """The `error.message` the real API answers this request body with, or None when valid.

    The same check the fake runs on every request it receives, for tests that build a body
    without sending it.
    """
    if not isinstance(body, dict):
        return "There was an error parsing the body of your request"
    return (
        _fields_problem(body)
        or _system_problem(body)
        or _tools_problem(body)
        or _messages_problem(body["messages"])
    )


def _fields_problem(body: dict[str, Any]) -> str | None:
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            return f"{name}: Field required"
    if not isinstance(body["model"], str):
        return "model: Input should be a valid string"
    max_tokens = body["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        return "max_tokens: Input should be a valid integer"
    if max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    if not isinstance(body["messages"], list):
        return "messages: Input should be a valid list"
    if not body["messages"]:
        return "messages: at least one message is required"
    return None


def _system_problem(body: dict[str, Any]) -> str | None:
    system = body.get("system")
    if system is None or isinstance(system, str):
        return None
    if not isinstance(system, list):
        return "system: Input should be a valid list"
    for index, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            return f"system.{index}.type: Input should be 'text'"
        if not isinstance(block.get("text"), str):
            return f"system.{index}.text: Input should be a valid string"
        if not block["text"]:
            return "system: text content blocks must be non-empty"
    return None


_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def _tools_problem(body: dict[str, Any]) -> str | None:
    tools = body.get("tools", [])
    if not isinstance(tools, list):
        return "tools: Input should be a valid list"
    names: list[str] = []
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            return f"tools.{index}: Input should be a valid dictionary"
        if tool.get("type", "custom") != "custom":
            continue  # A server tool (web search...): named and typed by Anthropic.
        name = tool.get("name")
        if name is None:
            return f"tools.{index}.custom.name: Field required"
        if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
            pattern = _TOOL_NAME.pattern
            return f"tools.{index}.custom.name: String should match pattern '^{pattern}$'"
        if "input_schema" not in tool:
            return f"tools.{index}.custom.input_schema: Field required"
        schema = tool["input_schema"]
        if not isinstance(schema, dict):
            return f"tools.{index}.custom.input_schema: Input should be a valid dictionary"
        if "type" not in schema:
            return f"tools.{index}.custom.input_schema.type: Field required"
        if schema["type"] != "object":
            return f"tools.{index}.custom.input_schema.type: Input should be 'object'"
        names.append(name)
    if len(set(names)) < len(names):
        return "tools: Tool names must be unique."
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        return (
            "tool_choice: Input tag does not match any of the expected tags: "
            "'auto', 'any', 'tool', 'none'"
        )
    if choice["type"] in ("any", "tool") and not tools:
        return "tool_choice: may only be specified while providing tools"
    if choice["type"] == "tool" and choice.get("name") not in names:
        return f"tool_choice: tool '{choice.get('name')}' not found in `tools`"
    return None


def _messages_problem(messages: list[Any]) -> str | None:
    last = len(messages) - 1
    for index, message in enumerate(messages):
        problem = _message_problem(index, message, final=index == last)
        if problem:
            return problem
    if messages[0]["role"] != "user":
        return 'messages: first message must use the "user" role'
    if messages[last]["role"] == "assistant":
        blocks = _content_blocks(messages[last]["content"])
        if (
            blocks
            and blocks[-1].get("type") == "text"
            and blocks[-1]["text"] != (blocks[-1]["text"].rstrip())
        ):
            return "messages: final assistant content cannot end with trailing whitespace"
    return _tool_pairing_problem(messages)


def _content_blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return content


def _message_problem(index: int, message: Any, *, final: bool) -> str | None:
    if not isinstance(message, dict):
        return f"messages.{index}: Input should be a valid dictionary"
    role = message.get("role")
    if role == "system":
        return (
            'messages: Unexpected role "system". The Messages API accepts a top-level `system` '
            'parameter, not "system" as an input message role.'
        )
    if role not in ("user", "assistant"):
        return f"messages.{index}.role: Input should be 'user' or 'assistant'"
    if "content" not in message:
        return f"messages.{index}.content: Field required"
    content = message["content"]
    if not isinstance(content, (str, list)):
        return f"messages.{index}.content: Input should be a valid list"
    for position, block in enumerate(content if isinstance(content, list) else []):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return f"messages.{index}.content.{position}: Input should be a valid dictionary"
        if block["type"] == "text" and not isinstance(block.get("text"), str):
            return f"messages.{index}.content.{position}.text: Field required"
    blocks = _content_blocks(content)
    if not blocks and not (final and role == "assistant"):
        return (
            f"messages.{index}: all messages must have non-empty content except for the "
            "optional final assistant message"
        )
    for block in blocks:
        if block["type"] == "text" and not block["text"]:
            return "messages: text content blocks must be non-empty"
        if block["type"] == "text" and not block["text"].strip():
            return "messages: text content blocks must contain non-whitespace text"
    return None


def _tool_pairing_problem(messages: list[dict[str, Any]]) -> str | None:
    """Each tool_use needs its tool_result in the next turn, and vice versa (as the API).

    The API merges consecutive messages of one role into one turn before it pairs them.
    """
    previous_uses: set[str] = set()  # Asked for by the assistant turn before this one.
    asked_at = 0  # The last message of that assistant turn.
    previous_role = ""
    uses: set[str] = set()
    answered: set[str] = set()
    for index, message in enumerate(messages):
        role = message["role"]
        if role != previous_role:
            if previous_role == "assistant":
                previous_uses, asked_at = uses, index - 1
            elif previous_uses - answered:
                return _unanswered(asked_at, previous_uses - answered)
            else:
                previous_uses = set()
            uses, answered = set(), set()
            previous_role = role
        for position, block in enumerate(_content_blocks(message["content"])):
            if block["type"] == "tool_use":
                uses.add(block.get("id", ""))
            elif block["type"] == "tool_result":
                result_id = block.get("tool_use_id")
                if role != "user" or result_id not in previous_uses:
                    return (
                        f"messages.{index}.content.{position}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {result_id}. Each `tool_result` block must have "
                        "a corresponding `tool_use` block in the previous message."
                    )
                answered.add(result_id)
    if previous_role == "user" and previous_uses - answered:
        return _unanswered(asked_at, previous_uses - answered)
    return None


def _unanswered(index: int, missing: set[str]) -> str:
    return (
        f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately "
        f"after: {', '.join(sorted(missing))}. Each `tool_use` block must have a corresponding "
        "`tool_result` block in the next message."
    )
