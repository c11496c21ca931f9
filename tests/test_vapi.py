"""Vapi's custom LLM through the official ``openai`` client, the strict Anthropic fake behind it.

The endpoint is served by uvicorn on a loopback port (``tests/support/platform_server.py``), with
the real memory (Redis), recorder, analysis queue and worker; requests are shaped as Vapi sends
them: OpenAI Chat Completions with the call object (``call.id``, ``call.customer.number``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from anthropic import AsyncAnthropic
from loguru import logger
from openai import AsyncOpenAI

from bot.wording import CALL_CONNECTED
from memory.metrics import REGISTRY
from memory.models import Fact
from memory.upstream import UPSTREAM, Service
from processors.tool_silence import DEFAULT_PHRASES
from tests.fakes.anthropic_server import Reply
from tests.support.analysis_answers import answer
from tests.support.call_harness import (
    ANA,
    OTHER,
    Line,
    analyse_queued,
    analysed_in_history,
    caller_of,
    queued_calls,
    runtime_of,
)
from tests.support.platform_server import VAPI_SECRET, platform_app, serving
from tests.support.values import API_KEY
from web.vapi import to_anthropic

VAPI_PROMPT = "You answer the phone for Bella's Bakery. Keep answers short."
FIRST_MESSAGE = "Hello, Bella's Bakery, how can I help?"


@pytest.fixture
async def vapi(line: Line, client: AsyncAnthropic) -> AsyncIterator[str]:
    """The base URL of a server taking Vapi's requests for the bakery line."""
    settings = line.settings(
        RAPPORT_VAPI_SECRET=VAPI_SECRET,
        RAPPORT_UNVERIFIED_CALLERS="full",
        RAPPORT_VAPI_ASSISTANT_ID="asst-bakery",
    )
    app = platform_app(settings, memory=line.memory, client=client)
    async with serving(app) as url:
        yield url


def _openai(url: str, secret: str = VAPI_SECRET) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{url}/vapi", api_key=secret, max_retries=0)


def _call(call_id: str, number: str | None) -> dict[str, Any]:
    return {"call": {"id": call_id, "customer": {"number": number}, "type": "inboundPhoneCall"}}


def _conversation(*said: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": VAPI_PROMPT},
        {"role": "assistant", "content": FIRST_MESSAGE},
    ]
    for index, text in enumerate(said):
        messages.append({"role": "user" if index % 2 == 0 else "assistant", "content": text})
    return messages


async def _stream(
    client: AsyncOpenAI, call_id: str, number: str | None, messages: list[dict[str, Any]]
) -> tuple[str, list[Any]]:
    stream = await client.chat.completions.create(
        model="rapport",
        messages=messages,  # type: ignore[arg-type]
        temperature=0,  # Vapi's default; the model's own sampling is kept
        max_tokens=250,
        stream=True,
        extra_body=_call(call_id, number),
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


async def _report(url: str, call_id: str, number: str, said: list[tuple[str, str]]) -> int:
    message = {
        "type": "end-of-call-report",
        "endedReason": "customer-ended-call",
        "call": {"id": call_id, "customer": {"number": number}},
        "artifact": {
            "messages": [
                {"role": "system", "message": VAPI_PROMPT, "time": 0, "secondsFromStart": 0},
                *(
                    {"role": role, "message": text, "time": 1, "secondsFromStart": 1}
                    for role, text in said
                ),
            ]
        },
    }
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{url}/vapi/events", json={"message": message}, headers={"x-vapi-secret": VAPI_SECRET}
        )
    return response.status_code


async def test_a_vapi_caller_is_remembered_from_one_call_to_the_next(line: Line, vapi: str) -> None:
    fake, store = line.fake, runtime_of(line).store
    logged: list[str] = []
    sink = logger.add(logged.append, level="DEBUG")
    client = _openai(vapi)
    ana = caller_of(line, ANA)

    # Call 1: the model answers only with Rapport's tool; Rapport runs it and carries on.
    fake.script(
        Reply.tool_call("remember", {"fact": "Caller is vegetarian"}),
        Reply.text("Noted, Ana! What can I get you?"),
    )
    said = "Hi, I'm Ana. Please remember that I'm vegetarian."
    text, chunks = await _stream(client, "vapi-1", ANA, _conversation(said))
    assert text == "Noted, Ana! What can I get you?"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(not (c.choices and c.choices[0].delta.tool_calls) for c in chunks)
    first, follow_up = fake.requests[-2:]
    assert first.stream and VAPI_PROMPT in first.system_text
    assert first.body["max_tokens"] == 250 and "temperature" not in first.body
    assert "vegetarian" not in first.system_text  # a first-time caller: no memory block
    assert [(m["role"], m["content"][0].get("text")) for m in first.messages] == [
        ("user", CALL_CONNECTED),
        ("assistant", FIRST_MESSAGE),
        ("user", said),
    ]
    assert first.tool_names[:2] == ["save_caller_name", "remember"]
    assert follow_up.tool_results() == ['{"saved": true, "fact": "Caller is vegetarian"}']
    assert [f.text for f in await store.all_facts(ana)] == ["Caller is vegetarian"]

    # Memory was loaded once for the call: a fact written meanwhile is not in this call's
    # prompt. A tool round whose follow-up is empty ends with the guard's closing phrase.
    await store.upsert_facts(ana, [Fact(text="Caller prefers oat milk", source_call_id="x")])
    fake.script(Reply.tool_call("save_caller_name", {"name": "Ana Puig"}), Reply.empty())
    text, _ = await _stream(
        client, "vapi-1", ANA, _conversation(said, "Noted!", "My full name is Ana Puig.")
    )
    assert text == DEFAULT_PHRASES["en"].closing
    assert "oat milk" not in fake.requests[-1].system_text

    # The end-of-call report closes the call and queues it once, however often it comes.
    spoken = [("bot", FIRST_MESSAGE), ("user", said), ("bot", "Noted, Ana! What can I get you?")]
    assert await _report(vapi, "vapi-1", ANA, spoken) == 200
    assert await _report(vapi, "vapi-1", ANA, spoken) == 200
    assert await queued_calls(line) == ["vapi-1"]
    record = await store.get_call(ana, "vapi-1")
    assert record is not None and record.ended_reason == "customer-ended-call"
    assert record.trust == "unverified"
    assert [(t.role, t.text) for t in record.transcript] == [
        ("assistant", FIRST_MESSAGE),
        ("user", said),
        ("assistant", "Noted, Ana! What can I get you?"),
    ]
    await analyse_queued(
        line,
        fake,
        answer(
            caller_name="Ana Puig",
            summary="Ana asked to be remembered as vegetarian.",
            facts=[{"text": "Caller collects a sourdough loaf on Saturdays", "confidence": 0.9}],
        ),
    )
    kept = await analysed_in_history(line, "vapi-1")  # the Vapi door reaches the history
    assert kept.analysis is not None and kept.analysis.caller_name == "Ana Puig"
    assert (kept.ended_reason, kept.trust) == ("customer-ended-call", "unverified")

    # Call 2: a new Vapi call id, the same number: the new facts are in the prompt.
    fake.script(Reply.text("Hello again, Ana!"))
    response = await client.chat.completions.create(
        model="rapport",
        messages=_conversation("Hi, it's me again."),  # type: ignore[arg-type]
        extra_body=_call("vapi-2", ANA),
    )
    assert response.choices[0].message.content == "Hello again, Ana!"
    prompt = fake.requests[-1].system_text
    assert "Ana Puig" in prompt and "vegetarian" in prompt and "sourdough" in prompt
    assert "oat milk" in prompt and "{{" not in prompt

    # Another number on the same line: nothing of Ana's.
    fake.script(Reply.text("Hello!"))
    await _stream(client, "vapi-3", OTHER, _conversation("Hi."))
    assert "Ana" not in fake.requests[-1].system_text

    logger.remove(sink)
    assert logged and not any("5550123" in entry or "vegetarian" in entry for entry in logged)


async def test_vapi_tools_go_back_to_vapi_with_their_ids(line: Line, vapi: str) -> None:
    fake = line.fake
    fake.script(Reply.tool_call("transferCall", {"destination": "+14155550100"}, text="Sure."))
    client = _openai(vapi)
    transfer = {
        "type": "function",
        "function": {
            "name": "transferCall",
            "description": "Transfer the call",
            "parameters": {"type": "object", "properties": {"destination": {"type": "string"}}},
        },
    }
    stream = await client.chat.completions.create(
        model="rapport",
        messages=_conversation("Put me through to the manager."),  # type: ignore[arg-type]
        tools=[transfer],  # type: ignore[list-item]
        stream=True,
        extra_body=_call("vapi-t", None),
    )
    chunks = [chunk async for chunk in stream]
    (call,) = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert call.function is not None and call.function.name == "transferCall"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert "transferCall" in fake.requests[-1].tool_names

    # Vapi runs it and sends the result back: it reaches Claude as a paired tool_result.
    fake.script(Reply.text("You're being transferred."))
    messages = [
        *_conversation("Put me through to the manager."),
        {
            "role": "assistant",
            "content": "Sure.",
            "tool_calls": [
                {"id": call.id, "type": "function", "function": call.function.model_dump()}
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "Transfer started"},
    ]
    text, _ = await _stream(client, "vapi-t", None, messages)
    assert text == "You're being transferred."
    assert fake.requests[-1].tool_results() == ["Transfer started"]


async def test_requests_without_the_vapi_secret_get_401(line: Line, vapi: str) -> None:
    with pytest.raises(openai.AuthenticationError):
        await _stream(_openai(vapi, "wrong-secret"), "vapi-x", ANA, _conversation("Hi"))
    async with httpx.AsyncClient() as http:
        bare = await http.post(f"{vapi}/vapi/events", json={"message": {"type": "hang"}})
        wrong = await http.post(
            f"{vapi}/vapi/events",
            json={"message": {"type": "hang"}},
            headers={"x-vapi-secret": "nope"},
        )
    assert (bare.status_code, wrong.status_code) == (401, 401)
    assert line.fake.requests == []


async def test_an_assistant_request_opens_with_the_callers_line(line: Line, vapi: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{vapi}/vapi/events",
            json={"message": {"type": "assistant-request", **_call("vapi-a", ANA)}},
            headers={"authorization": f"Bearer {VAPI_SECRET}"},
        )
    assert response.status_code == 200
    assert response.json() == {
        "assistantId": "asst-bakery",
        "assistantOverrides": {
            "firstMessage": "Hello, you're through to Bella's Bakery. How can I help you today?"
        },
    }


def test_openai_messages_become_a_valid_anthropic_conversation() -> None:
    system, messages = to_anthropic(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "user", "content": "   "},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
                    {"id": "c2", "type": "function", "function": {"name": "b", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "done"},
        ]
    )
    assert system == ["Be brief."]
    # The unanswered call (c2) is dropped with its partner missing; roles alternate from a user.
    assert messages == [
        {"role": "user", "content": [{"type": "text", "text": CALL_CONNECTED}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "c1", "name": "a", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "done"}],
        },
    ]


def _calls_counted(door: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "rapport_calls_total", {"transport": door, "trust": "unverified", "outcome": outcome}
    )
    return value or 0.0


async def test_an_llm_that_refuses_the_key_is_an_http_error_for_vapi_not_a_filler(
    line: Line,
) -> None:
    UPSTREAM.succeeded(Service.LLM)  # whatever earlier tests left
    settings = line.settings(RAPPORT_VAPI_SECRET=VAPI_SECRET, RAPPORT_UNVERIFIED_CALLERS="full")
    async with AsyncAnthropic(api_key="a-stale-key", base_url=line.fake.base_url) as stale:
        app = platform_app(settings, memory=line.memory, client=stale)
        async with serving(app) as url:
            refused = _openai(url)
            for stream in (True, False):
                with pytest.raises(openai.InternalServerError) as raised:
                    await refused.chat.completions.create(
                        model="rapport",
                        messages=_conversation("Hi, is the shop open?"),  # type: ignore[arg-type]
                        stream=stream,
                        extra_body=_call("vapi-dead", ANA),
                    )
                assert raised.value.status_code == 503
                assert raised.value.code == "llm_unavailable"
            assert UPSTREAM.refused() == {"llm": "refused the key: check ANTHROPIC_API_KEY"}
            counted = _calls_counted("vapi", "error")
            report = {
                "type": "end-of-call-report",
                "endedReason": "pipeline-error-custom-llm-llm-failed",
                "call": {"id": "vapi-dead", "customer": {"number": ANA}},
                "artifact": {"messages": [{"role": "bot", "message": FIRST_MESSAGE}]},
            }
            async with httpx.AsyncClient() as http:
                await http.post(
                    f"{url}/vapi/events",
                    json={"message": report},
                    headers={"x-vapi-secret": VAPI_SECRET},
                )
    assert _calls_counted("vapi", "error") == counted + 1
    record = await runtime_of(line).store.get_call(caller_of(line, ANA), "vapi-dead")
    assert record is not None
    assert record.ended_reason == "failed: llm unavailable (pipeline-error-custom-llm-llm-failed)"
    assert record.cut_short  # first on the follow-up list

    # The right key again: the next turn is answered, and the LLM is no longer refused.
    line.fake.script(Reply.text("Yes, we're open until six."))
    async with (
        AsyncAnthropic(api_key=API_KEY, base_url=line.fake.base_url) as good,
        serving(platform_app(settings, memory=line.memory, client=good)) as url,
    ):
        text, _ = await _stream(_openai(url), "vapi-alive", ANA, _conversation("Open?"))
    assert text == "Yes, we're open until six."
    assert UPSTREAM.refused() == {}
