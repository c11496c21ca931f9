"""The cloud services a process depends on failing: counted, named once, and current for /health.

Every door reports its upstream services here: the bot's calls (the LLM, speech-to-text and
text-to-speech, from Pipecat's error frames), the Vapi endpoint and the HTTP API (the LLM), the
analysis worker (its LLM and the webhook). Each failure is counted in
``rapport_service_errors_total{service, kind}``. The first failure of a service in a process is
one log line naming the variable to check ("The LLM refused the key: check
ANTHROPIC_API_KEY"); later ones add to a count, told in one line when the service answers
again.

A refused key (HTTP 401/403) is a failure no retry fixes: while the last attempt of a service was
refused, ``GET /health`` answers 503 naming it (:meth:`UpstreamServices.refused`). The state is
per process, not in Redis: each process reads its keys from its own environment, so a bot with a
wrong key says nothing about the others behind the same load balancer, and the balancer should
take out exactly the processes that fail. It clears itself with the service's next success.
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum

import anthropic
from loguru import logger

from memory.metrics import SERVICE_ERRORS


class Service(StrEnum):
    """A cloud service Rapport depends on (the ``service`` label)."""

    LLM = "llm"
    STT = "stt"
    TTS = "tts"
    ANALYSIS_LLM = "analysis_llm"
    WEBHOOK = "webhook"


class FailureKind(StrEnum):
    """Why a service failed (the ``kind`` label)."""

    AUTH = "auth"
    UNREACHABLE = "unreachable"
    RATE_LIMITED = "rate_limited"
    OTHER = "other"


#: What an operator checks when a service fails, by service.
CHECK: dict[Service, str] = {
    Service.LLM: "ANTHROPIC_API_KEY",
    Service.STT: "DEEPGRAM_API_KEY",
    Service.TTS: "AZURE_SPEECH_KEY and AZURE_SPEECH_REGION",
    Service.ANALYSIS_LLM: "ANTHROPIC_API_KEY",
    Service.WEBHOOK: "RAPPORT_ANALYSIS_WEBHOOK_URL and RAPPORT_ANALYSIS_WEBHOOK_SECRET",
}
_NAMES: dict[Service, str] = {
    Service.LLM: "The LLM",
    Service.STT: "The speech-to-text service",
    Service.TTS: "The text-to-speech service",
    Service.ANALYSIS_LLM: "The analysis LLM",
    Service.WEBHOOK: "The analysis webhook",
}
_HOW: dict[FailureKind, str] = {
    FailureKind.AUTH: "refused the key",
    FailureKind.UNREACHABLE: "could not be reached",
    FailureKind.RATE_LIMITED: "is rate limiting requests",
    FailureKind.OTHER: "failed",
}
#: Services whose refused key makes the process unhealthy (the webhook's refusal is the
#: receiver's business: it is counted and logged, and the analyses go on).
_KEYED = (Service.LLM, Service.STT, Service.TTS, Service.ANALYSIS_LLM)


def status_kind(status: int) -> FailureKind:
    """The kind of an HTTP status that is a failure (401/403: auth, 429: rate limited)."""
    if status in (401, 403):
        return FailureKind.AUTH
    if status == 429:
        return FailureKind.RATE_LIMITED
    return FailureKind.OTHER


def failure_kind(error: BaseException) -> FailureKind:
    """The kind of a failed request, from the exception or the ones it was raised from.

    An HTTP status (``status_code``, or a ``response`` carrying one) decides; else a
    connection failure or timeout is ``unreachable``; anything else is ``other``.
    """
    seen: BaseException | None = error
    while seen is not None:
        response = getattr(seen, "response", None)
        for status in (
            getattr(seen, "status_code", None),
            getattr(response, "status_code", None),
            getattr(response, "status", None),
        ):
            if isinstance(status, int) and not isinstance(status, bool):
                return status_kind(status)
        if isinstance(seen, (anthropic.APIConnectionError, ConnectionError, TimeoutError, OSError)):
            return FailureKind.UNREACHABLE
        seen = seen.__cause__ or seen.__context__
    return FailureKind.OTHER


class UpstreamServices:
    """The process's upstream services: their failures counted, logged once, and current."""

    def __init__(self) -> None:
        self._logged: set[Service] = set()
        self._failures: Counter[Service] = Counter()
        self._refused: set[Service] = set()

    def failed(self, service: Service, kind: FailureKind) -> None:
        """A request to ``service`` failed: count it; name the variable the first time."""
        SERVICE_ERRORS.labels(service=service.value, kind=kind.value).inc()
        self._failures[service] += 1
        if kind is FailureKind.AUTH and service in _KEYED:
            self._refused.add(service)
        if service in self._logged:
            return
        self._logged.add(service)
        logger.error(
            "{} {}: check {} (later failures are counted in rapport_service_errors_total)",
            _NAMES[service],
            _HOW[kind],
            CHECK[service],
        )

    def succeeded(self, service: Service) -> None:
        """A request to ``service`` succeeded: a refused key is no longer current."""
        failures = self._failures.pop(service, 0)
        self._refused.discard(service)
        if failures and service in self._logged:
            logger.info("{} answers again ({} failures before)", _NAMES[service], failures)
        self._logged.discard(service)

    def refused(self) -> dict[str, str]:
        """The services whose last attempt was refused (401/403), with the variable to check."""
        return {
            service.value: f"refused the key: check {CHECK[service]}"
            for service in _KEYED
            if service in self._refused
        }


#: The process's upstream services (one set of keys per process, from its environment).
UPSTREAM = UpstreamServices()
