"""Cloud services failing: each failure's kind, one log line per outage, the count between.

The errors are the real SDK's, raised against the Anthropic fake (a 429, a refused key) or a
port nothing listens on.
"""

from __future__ import annotations

import socket

import anthropic
import pytest
from anthropic import AsyncAnthropic
from loguru import logger

from memory.metrics import REGISTRY
from memory.upstream import FailureKind, Service, UpstreamServices, failure_kind
from tests.fakes.anthropic_server import ErrorReply, FakeAnthropic
from tests.support.values import API_KEY

MODEL = "claude-haiku-4-5"
USER = [{"role": "user", "content": "Hello"}]


async def _raised(client: AsyncAnthropic) -> BaseException:
    with pytest.raises(anthropic.APIError) as raised:
        await client.messages.create(model=MODEL, max_tokens=10, messages=USER)  # type: ignore[arg-type]
    return raised.value


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_each_failure_has_its_kind(fake: FakeAnthropic) -> None:
    refused = AsyncAnthropic(api_key="a-stale-key", base_url=fake.base_url, max_retries=0)
    assert failure_kind(await _raised(refused)) is FailureKind.AUTH
    fake.script(ErrorReply.rate_limited(retry_after=0))
    limited = AsyncAnthropic(api_key=API_KEY, base_url=fake.base_url, max_retries=0)
    assert failure_kind(await _raised(limited)) is FailureKind.RATE_LIMITED
    fake.script(ErrorReply.server_error())
    assert failure_kind(await _raised(limited)) is FailureKind.OTHER
    nowhere = AsyncAnthropic(
        api_key=API_KEY, base_url=f"http://127.0.0.1:{_closed_port()}", max_retries=0
    )
    assert failure_kind(await _raised(nowhere)) is FailureKind.UNREACHABLE


def test_an_outage_is_one_line_naming_the_variable_then_a_count_then_one_line() -> None:
    services = UpstreamServices()
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO")
    before = REGISTRY.get_sample_value(
        "rapport_service_errors_total", {"service": "tts", "kind": "unreachable"}
    )
    try:
        for _ in range(5):
            services.failed(Service.TTS, FailureKind.UNREACHABLE)
        services.succeeded(Service.TTS)
        services.succeeded(Service.TTS)
    finally:
        logger.remove(sink)

    assert lines == [
        "The text-to-speech service could not be reached: check AZURE_SPEECH_KEY and "
        "AZURE_SPEECH_REGION (later failures are counted in rapport_service_errors_total)",
        "The text-to-speech service answers again (5 failures before)",
    ]
    after = REGISTRY.get_sample_value(
        "rapport_service_errors_total", {"service": "tts", "kind": "unreachable"}
    )
    assert after == (before or 0.0) + 5
    assert services.refused() == {}  # unreachable is not a refused key


def test_a_refused_webhook_is_counted_but_not_unhealthy() -> None:
    services = UpstreamServices()
    services.failed(Service.WEBHOOK, FailureKind.AUTH)
    services.failed(Service.LLM, FailureKind.AUTH)
    assert services.refused() == {"llm": "refused the key: check ANTHROPIC_API_KEY"}
