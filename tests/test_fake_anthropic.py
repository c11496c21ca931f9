"""The Anthropic Messages API fake, through the real `anthropic` SDK and `AnthropicLLMService`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import anthropic
import pytest
from anthropic import AsyncAnthropic
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    FunctionCallResultFrame,
    LLMFullResponseEndFrame,
    LLMMessagesAppendFrame,
    LLMTextFrame,
    TTSSpeakFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.anthropic.llm import AnthropicLLMService
from pipecat.services.llm_service import FunctionCallParams
from pipecat.workers.runner import WorkerRunner

from processors.tool_silence import DEFAULT_PHRASES, ToolSilenceGuard
from tests.fakes.anthropic_server import (
    ErrorReply,
    FakeAnthropic,
    InvalidRequestsError,
    Reply,
    Text,
    ToolUse,
    request_problem,
)

MODEL = "claude-haiku-4-5"
USER = [{"role": "user", "content": "Hi, I'm Ana."}]
ANALYSIS_TOOL = {
    "name": "record_analysis",
    "description": "Record the call analysis.",
    "input_schema": {"type": "object", "properties": {"summary": {"type": "string"}}},
}


@pytest.fixture
async def fake():
    async with FakeAnthropic() as server:
        yield server


def client(fake: FakeAnthropic, **kwargs: object) -> AsyncAnthropic:
    return AsyncAnthropic(api_key="test-key", base_url=fake.base_url, **kwargs)


# --- the SDK, non-streaming -------------------------------------------------------------------


async def test_text_reply_and_recorded_request(fake: FakeAnthropic) -> None:
    fake.script(Reply.text("Hello Ana."))
    message = await client(fake).messages.create(
        model=MODEL, max_tokens=100, system="Be brief.", messages=USER
    )
    assert [block.text for block in message.content] == ["Hello Ana."]
    assert (message.stop_reason, message.model, message.role) == ("end_turn", MODEL, "assistant")
    assert message.id.startswith("msg_") and message.usage.output_tokens > 0
    (request,) = fake.requests
    assert request.headers["x-api-key"] == "test-key"
    assert request.headers["anthropic-version"]
    assert (request.system_text, request.messages, request.stream) == ("Be brief.", USER, False)


async def test_forced_tool_use_returns_the_schema_output(fake: FakeAnthropic) -> None:
    fake.script(Reply.tool_call("record_analysis", {"summary": "Asked about a refund."}))
    message = await client(fake).messages.create(
        model=MODEL,
        max_tokens=500,
        messages=USER,
        tools=[ANALYSIS_TOOL],
        tool_choice={"type": "tool", "name": "record_analysis"},
    )
    (block,) = message.content
    assert block.type == "tool_use" and block.id.startswith("toolu_")
    assert (block.name, block.input) == ("record_analysis", {"summary": "Asked about a refund."})
    assert message.stop_reason == "tool_use"
    assert fake.requests[0].tool_names == ["record_analysis"]


async def test_empty_and_malformed_json_replies_come_back_verbatim(fake: FakeAnthropic) -> None:
    fake.script(Reply.empty(), Reply.text('{"summary": "cut sho'))
    sdk = client(fake)
    empty = await sdk.messages.create(model=MODEL, max_tokens=10, messages=USER)
    malformed = await sdk.messages.create(model=MODEL, max_tokens=10, messages=USER)
    assert (empty.content, empty.stop_reason) == ([], "end_turn")
    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed.content[0].text)


# --- the SDK, streaming -----------------------------------------------------------------------


async def test_stream_emits_the_real_event_sequence(fake: FakeAnthropic) -> None:
    fake.script(Reply((Text("Noted, Ana."), ToolUse("remember", {"fact": "Vegetarian"}))))
    stream = await client(fake).messages.create(
        model=MODEL, max_tokens=100, messages=USER, stream=True
    )
    events = [event async for event in stream]
    kinds = [event.type for event in events]
    # `ping` is consumed by the SDK; everything else arrives in the real order.
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 2
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.index == 0)
    tool_json = "".join(
        e.delta.partial_json for e in events if e.type == "content_block_delta" and e.index == 1
    )
    assert text == "Noted, Ana." and json.loads(tool_json) == {"fact": "Vegetarian"}
    assert events[0].message.stop_reason is None
    assert events[-2].delta.stop_reason == "tool_use" and events[-2].usage.output_tokens > 0
    assert fake.requests[0].stream


async def test_stream_helper_accumulates_the_final_message(fake: FakeAnthropic) -> None:
    fake.script(Reply.tool_call("remember", {"fact": "Vegetarian"}, text="Sure."), Reply.empty())
    sdk = client(fake)
    async with sdk.messages.stream(model=MODEL, max_tokens=100, messages=USER) as stream:
        message = await stream.get_final_message()
    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert message.content[1].input == {"fact": "Vegetarian"}
    async with sdk.messages.stream(model=MODEL, max_tokens=100, messages=USER) as stream:
        empty = await stream.get_final_message()
    assert (empty.content, empty.stop_reason) == ([], "end_turn")


async def test_overload_in_the_middle_of_a_stream_raises(fake: FakeAnthropic) -> None:
    fake.script(ErrorReply.overloaded(during_stream=True))
    stream = await client(fake, max_retries=0).messages.create(
        model=MODEL, max_tokens=10, messages=USER, stream=True
    )
    with pytest.raises(anthropic.APIStatusError) as caught:
        async for _ in stream:
            pass
    assert caught.value.body["error"]["type"] == "overloaded_error"


# --- errors and retries -----------------------------------------------------------------------


async def test_sdk_retries_429_after_retry_after_then_succeeds(fake: FakeAnthropic) -> None:
    fake.script(ErrorReply.rate_limited(retry_after=0.01), Reply.text("Back."))
    message = await client(fake).messages.create(model=MODEL, max_tokens=10, messages=USER)
    assert message.content[0].text == "Back." and len(fake.requests) == 2


@pytest.mark.parametrize(
    ("error", "exception"),
    [
        (ErrorReply.rate_limited(retry_after=3), anthropic.RateLimitError),
        (ErrorReply.overloaded(), anthropic.OverloadedError),
        (ErrorReply.server_error(), anthropic.InternalServerError),
    ],
)
async def test_errors_have_the_real_shape(
    fake: FakeAnthropic, error: ErrorReply, exception: type[Exception]
) -> None:
    fake.script(error)
    with pytest.raises(exception) as caught:
        await client(fake, max_retries=0).messages.create(model=MODEL, max_tokens=10, messages=USER)
    assert caught.value.status_code == error.status
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"] == {"type": error.error_type, "message": error.message}
    assert caught.value.response.headers.get("retry-after") == (
        None if error.retry_after is None else f"{error.retry_after:g}"
    )


async def test_requires_the_headers_the_real_api_requires(fake: FakeAnthropic) -> None:
    url = f"{fake.base_url}/v1/messages"
    body = {"model": MODEL, "max_tokens": 10, "messages": USER}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body, headers={"anthropic-version": "2023-06-01"}) as r:
            assert (r.status, (await r.json())["error"]["type"]) == (401, "authentication_error")
        async with http.post(url, json=body, headers={"x-api-key": "k"}) as r:
            assert (r.status, (await r.json())["error"]["type"]) == (400, "invalid_request_error")
    (rejection,) = fake.take_rejections()
    assert rejection.message == "anthropic-version: header is required"
    async with FakeAnthropic(api_key="the-right-key") as strict:
        wrong = AsyncAnthropic(api_key="a-wrong-key", base_url=strict.base_url)
        with pytest.raises(anthropic.AuthenticationError) as refused:
            await wrong.messages.create(model=MODEL, max_tokens=10, messages=USER)
    # Anthropic's own 401 body for a wrong key.
    assert refused.value.status_code == 401
    assert refused.value.body["type"] == "error"
    assert refused.value.body["error"] == {
        "type": "authentication_error",
        "message": "invalid x-api-key",
    }
    assert refused.value.body["request_id"].startswith("req_")


# --- the real API's request rules -------------------------------------------------------------


def _use(tool_id: str = "toolu_1", name: str = "remember") -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": {"fact": "Vegetarian"}}


def _result(tool_id: str = "toolu_1") -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tool_id, "content": "saved"}


def _user(*content: dict[str, Any] | str) -> dict[str, Any]:
    return {"role": "user", "content": content[0] if isinstance(content[0], str) else [*content]}


def _assistant(*content: dict[str, Any] | str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": content[0] if isinstance(content[0], str) else [*content],
    }


def _tool(name: str = "remember", schema: object = None) -> dict[str, Any]:
    return {
        "name": name,
        "description": "Remember a fact.",
        "input_schema": {"type": "object", "properties": {}} if schema is None else schema,
    }


def _body(**fields: object) -> dict[str, Any]:
    """A valid request with `fields` replaced (a field set to `...` is removed)."""
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 10, "messages": USER}
    body.update(fields)
    return {name: value for name, value in body.items() if value is not ...}


_TRAILING = "messages: final assistant content cannot end with trailing whitespace"
_EMPTY_TEXT = "messages: text content blocks must be non-empty"
_WHITESPACE_TEXT = "messages: text content blocks must contain non-whitespace text"
_NAME_PATTERN = "tools.0.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"
_UNEXPECTED_RESULT = (
    "messages.{}.content.{}: unexpected `tool_use_id` found in `tool_result` blocks: {}. Each "
    "`tool_result` block must have a corresponding `tool_use` block in the previous message."
)
_UNANSWERED_USE = (
    "messages.{}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. "
    "Each `tool_use` block must have a corresponding `tool_result` block in the next message."
)

# Each: a request the real Messages API refuses, and the `error.message` it answers with.
INVALID_REQUESTS: dict[str, tuple[dict[str, Any], str]] = {
    "no messages": (_body(messages=...), "messages: Field required"),
    "empty messages": (_body(messages=[]), "messages: at least one message is required"),
    "no model": (_body(model=...), "model: Field required"),
    "no max_tokens": (_body(max_tokens=...), "max_tokens: Field required"),
    "max_tokens zero": (
        _body(max_tokens=0),
        "max_tokens: Input should be greater than or equal to 1",
    ),
    "max_tokens a string": (_body(max_tokens="10"), "max_tokens: Input should be a valid integer"),
    "max_tokens a float": (_body(max_tokens=10.5), "max_tokens: Input should be a valid integer"),
    "role system": (
        _body(messages=[{"role": "system", "content": "Be brief."}, *USER]),
        'messages: Unexpected role "system". The Messages API accepts a top-level `system` '
        'parameter, not "system" as an input message role.',
    ),
    "role tool": (
        _body(messages=[*USER, {"role": "tool", "content": "x"}]),
        "messages.1.role: Input should be 'user' or 'assistant'",
    ),
    "first message from the assistant": (
        _body(messages=[_assistant("Hello, Rapport here."), *USER]),
        'messages: first message must use the "user" role',
    ),
    "only an assistant message": (
        _body(messages=[_assistant("Hello, Rapport here.")]),
        'messages: first message must use the "user" role',
    ),
    "empty string content": (
        _body(messages=[_user("")]),
        "messages.0: all messages must have non-empty content except for the optional final "
        "assistant message",
    ),
    "empty content list": (
        _body(messages=[{"role": "user", "content": []}]),
        "messages.0: all messages must have non-empty content except for the optional final "
        "assistant message",
    ),
    "empty earlier assistant message": (
        _body(messages=[*USER, _assistant(""), _user("Hello?")]),
        "messages.1: all messages must have non-empty content except for the optional final "
        "assistant message",
    ),
    "empty text block": (_body(messages=[_user({"type": "text", "text": ""})]), _EMPTY_TEXT),
    "empty text block beside others": (
        _body(messages=[_user({"type": "text", "text": "Hi"}, {"type": "text", "text": ""})]),
        _EMPTY_TEXT,
    ),
    "whitespace-only text": (_body(messages=[*USER, _assistant("\n\n"), *USER]), _WHITESPACE_TEXT),
    "final assistant ends in a space": (_body(messages=[*USER, _assistant("Sure, ")]), _TRAILING),
    "final assistant ends in a newline": (
        _body(messages=[*USER, _assistant({"type": "text", "text": "Sure.\n"})]),
        _TRAILING,
    ),
    "tool_result for no tool_use": (
        _body(messages=[*USER, _assistant("Let me see."), _user(_result())]),
        _UNEXPECTED_RESULT.format(2, 0, "toolu_1"),
    ),
    "tool_result for another tool_use": (
        _body(
            messages=[*USER, _assistant(_use("toolu_1")), _user(_result("toolu_1"), _result("x"))]
        ),
        _UNEXPECTED_RESULT.format(2, 1, "x"),
    ),
    "tool_result for a tool_use two turns back": (
        _body(
            messages=[
                *USER,
                _assistant(_use("toolu_1")),
                _user(_result("toolu_1")),
                _assistant("Saved."),
                _user(_result("toolu_1")),
            ]
        ),
        _UNEXPECTED_RESULT.format(4, 0, "toolu_1"),
    ),
    "tool_use answered by plain text": (
        _body(messages=[*USER, _assistant(_use("toolu_1")), _user("And another thing.")]),
        _UNANSWERED_USE.format(1, "toolu_1"),
    ),
    "one of two tool_uses unanswered": (
        _body(
            messages=[
                *USER,
                _assistant(_use("toolu_1"), _use("toolu_2")),
                _user(_result("toolu_2")),
            ]
        ),
        _UNANSWERED_USE.format(1, "toolu_1"),
    ),
    "tool name with a space": (_body(tools=[_tool("remember fact")]), _NAME_PATTERN),
    "tool name with a dot": (_body(tools=[_tool("memory.remember")]), _NAME_PATTERN),
    "tool name of 65 characters": (_body(tools=[_tool("r" * 65)]), _NAME_PATTERN),
    "empty tool name": (_body(tools=[_tool("")]), _NAME_PATTERN),
    "no input_schema": (
        _body(tools=[{"name": "remember", "description": "Remember."}]),
        "tools.0.custom.input_schema: Field required",
    ),
    "input_schema a string": (
        _body(tools=[_tool(schema="object")]),
        "tools.0.custom.input_schema: Input should be a valid dictionary",
    ),
    "input_schema without a type": (
        _body(tools=[_tool(schema={"properties": {}})]),
        "tools.0.custom.input_schema.type: Field required",
    ),
    "input_schema of a string": (
        _body(tools=[_tool(schema={"type": "string"})]),
        "tools.0.custom.input_schema.type: Input should be 'object'",
    ),
    "two tools of one name": (_body(tools=[_tool(), _tool()]), "tools: Tool names must be unique."),
    "tool_choice naming no offered tool": (
        _body(tools=[_tool()], tool_choice={"type": "tool", "name": "record_analysis"}),
        "tool_choice: tool 'record_analysis' not found in `tools`",
    ),
    "tool_choice without tools": (
        _body(tool_choice={"type": "any"}),
        "tool_choice: may only be specified while providing tools",
    ),
    "system a dict": (
        _body(system={"type": "text", "text": "Be brief."}),
        "system: Input should be a valid list",
    ),
    "system blocks not text": (
        _body(system=[{"type": "image", "source": {}}]),
        "system.0.type: Input should be 'text'",
    ),
    "system with an empty text block": (
        _body(system=[{"type": "text", "text": ""}]),
        "system: text content blocks must be non-empty",
    ),
}

# Each: a request the real Messages API accepts, however close it sits to a rule above.
VALID_REQUESTS: dict[str, dict[str, Any]] = {
    "one user message": _body(),
    "text blocks": _body(messages=[_user({"type": "text", "text": "Hi, I'm Ana."})]),
    "system string and blocks": _body(
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    ),
    "empty system string": _body(system=""),
    "consecutive user messages (merged by the API)": _body(messages=[*USER, _user("Hello?")]),
    "consecutive assistant messages": _body(
        messages=[*USER, _assistant("One."), _assistant("Two."), _user("Go on.")]
    ),
    "prefill without trailing whitespace": _body(messages=[*USER, _assistant("{")]),
    "empty final assistant message": _body(messages=[*USER, _assistant("")]),
    "whitespace inside the final assistant text": _body(messages=[*USER, _assistant("Sure, Ana")]),
    "trailing whitespace in a user message": _body(messages=[_user("Hi, I'm Ana.\n")]),
    "tool round trip": _body(
        tools=[_tool()],
        messages=[
            *USER,
            _assistant({"type": "text", "text": "Noting that."}, _use("toolu_1")),
            _user(_result("toolu_1"), {"type": "text", "text": "Thanks."}),
            _assistant("Saved."),
            _user("Bye."),
        ],
    ),
    "two tool_uses answered in one message": _body(
        tools=[_tool()],
        messages=[
            *USER,
            _assistant(_use("toolu_1"), _use("toolu_2")),
            _user(_result("toolu_2"), _result("toolu_1")),
        ],
    ),
    "tool_results split over consecutive user messages": _body(
        messages=[
            *USER,
            _assistant(_use("toolu_1"), _use("toolu_2")),
            _user(_result("toolu_1")),
            _user(_result("toolu_2")),
        ],
    ),
    "a final tool_use with no next message": _body(messages=[*USER, _assistant(_use("toolu_1"))]),
    "tool names at the edges of the pattern": _body(
        tools=[_tool("a"), _tool("save_caller-name_2"), _tool("r" * 64)]
    ),
    "forced tool": _body(
        tools=[ANALYSIS_TOOL], tool_choice={"type": "tool", "name": "record_analysis"}
    ),
    "tool_choice none": _body(tools=[_tool()], tool_choice={"type": "none"}),
    "null system": _body(system=None),
}


async def _post(fake: FakeAnthropic, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    headers = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{fake.base_url}/v1/messages", json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


@pytest.mark.parametrize(("body", "message"), INVALID_REQUESTS.values(), ids=INVALID_REQUESTS)
async def test_refuses_what_the_real_api_refuses(
    fake: FakeAnthropic, body: dict[str, Any], message: str
) -> None:
    fake.script(Reply.text("Never sent."))
    status, reply = await _post(fake, body)
    assert status == 400
    assert reply["type"] == "error"
    assert reply["error"] == {"type": "invalid_request_error", "message": message}
    assert reply["request_id"].startswith("req_")
    assert request_problem(body) == message
    (rejection,) = fake.take_rejections()
    assert (rejection.request, rejection.message) == (fake.requests[0], message)
    assert fake.pending == 1  # a refused request never reaches the script or the handler


@pytest.mark.parametrize("body", VALID_REQUESTS.values(), ids=VALID_REQUESTS)
async def test_accepts_what_the_real_api_accepts(fake: FakeAnthropic, body: dict[str, Any]) -> None:
    fake.script(Reply.text("Fine."))
    status, reply = await _post(fake, body)
    assert (status, reply["content"]) == (200, [{"type": "text", "text": "Fine."}])
    assert request_problem(body) is None and fake.rejections == []


async def test_the_sdk_raises_bad_request_and_the_handler_never_sees_it() -> None:
    seen: list[object] = []

    def handler(request: object) -> Reply:
        seen.append(request)
        return Reply.text("Never sent.")

    async with FakeAnthropic(handler=handler) as strict:
        sdk = AsyncAnthropic(api_key="k", base_url=strict.base_url, max_retries=0)
        with pytest.raises(anthropic.BadRequestError) as caught:
            await sdk.messages.create(model=MODEL, max_tokens=10, messages=[])
        assert caught.value.status_code == 400
        assert caught.value.body["error"] == {
            "type": "invalid_request_error",
            "message": "messages: at least one message is required",
        }
        assert [r.message for r in strict.take_rejections()] == [
            "messages: at least one message is required"
        ]
    assert seen == [] and len(strict.requests) == 1


async def test_an_untaken_rejection_fails_the_test() -> None:
    strict = FakeAnthropic()
    await strict.start()
    sdk = AsyncAnthropic(api_key="k", base_url=strict.base_url, max_retries=0)
    with pytest.raises(anthropic.BadRequestError):
        await sdk.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "assistant", "content": "Hello!"}]
        )
    with pytest.raises(InvalidRequestsError, match="request 0: messages: first message must use"):
        await strict.close()
    strict.assert_no_rejections()  # each rejection is reported once
    assert strict not in FakeAnthropic.running()


async def test_handler_answers_once_the_script_is_used_up(fake: FakeAnthropic) -> None:
    async def echo(request):
        await asyncio.sleep(0)
        return Reply.text(f"You said: {request.messages[-1]['content']}")

    async with FakeAnthropic(handler=echo) as echoing:
        echoing.script(Reply.text("Scripted."))
        sdk = AsyncAnthropic(api_key="k", base_url=echoing.base_url)
        first = await sdk.messages.create(model=MODEL, max_tokens=10, messages=USER)
        second = await sdk.messages.create(model=MODEL, max_tokens=10, messages=USER)
    assert [first.content[0].text, second.content[0].text] == [
        "Scripted.",
        "You said: Hi, I'm Ana.",
    ]


async def test_an_unscripted_request_fails_fast_without_retries(fake: FakeAnthropic) -> None:
    with pytest.raises(anthropic.InternalServerError, match="no scripted response"):
        await client(fake).messages.create(model=MODEL, max_tokens=10, messages=USER)
    assert len(fake.requests) == 1


async def test_delay_holds_the_response_back(fake: FakeAnthropic) -> None:
    fake.script(Reply.text("Too late.", delay=2.0))
    with pytest.raises(anthropic.APITimeoutError):
        await client(fake, max_retries=0, timeout=0.2).messages.create(
            model=MODEL, max_tokens=10, messages=USER
        )


# --- the real AnthropicLLMService in a tiny pipeline ------------------------------------------


class _Capture(FrameProcessor):
    """Records the frames flowing downstream past it and wakes whoever waits on them."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []
        self._arrived = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
            self._arrived.set()
        await self.push_frame(frame, direction)

    async def wait_for(self, done: Callable[[list[Frame]], bool]) -> None:
        async with asyncio.timeout(10):
            while not done(self.frames):
                self._arrived.clear()
                await self._arrived.wait()


def count(kind: type[Frame]) -> Callable[[list[Frame]], int]:
    return lambda frames: sum(isinstance(frame, kind) for frame in frames)


async def converse(
    fake: FakeAnthropic,
    tool_result: object,
    *,
    done: Callable[[list[Frame]], bool],
    guard: bool = False,
) -> tuple[list[Frame], LLMContext]:
    """Run user turn → LLM → [guard] → capture → assistant aggregator until `done`, drained."""
    llm = AnthropicLLMService(
        api_key="test-key",
        client=client(fake),
        settings=AnthropicLLMService.Settings(model=MODEL, system_instruction="You are Rapport."),
    )

    async def remember(params: FunctionCallParams) -> None:
        await params.result_callback(tool_result)

    llm.register_function("remember", remember)
    remember_schema = FunctionSchema(
        name="remember",
        description="Remember a fact about the caller.",
        properties={"fact": {"type": "string"}},
        required=["fact"],
    )
    context = LLMContext(tools=ToolsSchema(standard_tools=[remember_schema]))
    user, assistant = LLMContextAggregatorPair(context)
    capture = _Capture()
    middle: Sequence[FrameProcessor] = [ToolSilenceGuard(filler_after=30)] if guard else []
    worker = PipelineWorker(
        Pipeline([user, llm, *middle, capture, assistant]),
        enable_rtvi=False,
        idle_timeout_secs=None,
    )
    runner = WorkerRunner(handle_sigint=False)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _on_started(_worker: PipelineWorker, _frame: Frame) -> None:
        started.set()

    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(started.wait(), 10)
        message = {"role": "user", "content": "Please remember I'm vegetarian."}
        await worker.queue_frame(LLMMessagesAppendFrame(messages=[message], run_llm=True))
        await capture.wait_for(done)
        assert await worker.flush_pipeline()  # whatever the last frames set off has happened
    finally:
        await worker.queue_frame(EndFrame())
        await asyncio.wait_for(running, 10)
    return capture.frames, context


async def test_service_streams_text_from_the_fake(fake: FakeAnthropic) -> None:
    fake.script(Reply.text("Hello there, I'm Rapport."))
    frames, _ = await converse(fake, None, done=lambda f: count(LLMFullResponseEndFrame)(f) == 1)
    assert "".join(f.text for f in frames if isinstance(f, LLMTextFrame)) == (
        "Hello there, I'm Rapport."
    )
    (request,) = fake.requests
    assert (request.stream, request.body["model"]) == (True, MODEL)
    assert request.system_text == "You are Rapport."
    assert request.tool_names == ["remember"]
    assert request.query.get("beta") == "true"  # the service calls client.beta.messages


async def test_service_tool_call_round_trip(fake: FakeAnthropic) -> None:
    fake.script(Reply.tool_call("remember", {"fact": "Vegetarian"}), Reply.text("Saved."))
    frames, context = await converse(
        fake, {"saved": True}, done=lambda f: count(LLMFullResponseEndFrame)(f) == 2
    )
    assert len(fake.requests) == 2
    # The fake rejects unpaired tool_use/tool_result, so the second request is well-formed.
    assert fake.requests[1].tool_results() == ['{"saved": true}']
    assert [f.text for f in frames if isinstance(f, LLMTextFrame)] == ["Saved."]
    assert context.messages[-1] == {"role": "assistant", "content": "Saved."}


async def test_falsy_tool_result_gets_no_follow_up_so_the_guard_speaks(fake: FakeAnthropic) -> None:
    """Pipecat 1.14 does not re-run the LLM after a falsy tool result (pipecat#4298)."""
    fake.script(Reply.tool_call("remember", {"fact": "Vegetarian"}), Reply.text("Never asked."))
    frames, context = await converse(
        fake, None, guard=True, done=lambda f: count(TTSSpeakFrame)(f) == 1
    )
    assert len(fake.requests) == 1 and fake.pending == 1
    assert count(FunctionCallResultFrame)(frames) == 1
    said = [f.text for f in frames if isinstance(f, TTSSpeakFrame)]
    assert said == [DEFAULT_PHRASES["en"].closing]
    assert context.messages[-1]["content"] == "COMPLETED"  # what Pipecat stores for `None`
