"""The optional analysis webhook: each call's analysis POSTed as signed JSON to the business.

The body is UTF-8 JSON; the ``X-Rapport-Signature`` header is ``sha256=`` and the hex
HMAC-SHA256 of the raw body keyed with ``RAPPORT_ANALYSIS_WEBHOOK_SECRET``. A receiver
recomputes it over the exact bytes it received and compares in constant time
(:func:`signature_valid`); the body's ``sent_at`` lets it refuse old replays.

Deliveries run in the background and are retried with backoff on connection errors, timeouts,
408, 429 (honouring ``retry-after``) and 5xx, up to a limit. The analysis is stored before its
delivery starts, so a webhook that is slow or down never delays, blocks or loses it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

import aiohttp
from loguru import logger

from memory.backoff import backoff_delay
from memory.models import now
from memory.upstream import UPSTREAM, FailureKind, Service, status_kind

SIGNATURE_HEADER = "X-Rapport-Signature"
_RETRIED_STATUSES = frozenset({408, 425, 429})


def sign(body: bytes, secret: str) -> str:
    """The ``X-Rapport-Signature`` value of a body: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(body: bytes, signature: str, secret: str) -> bool:
    """Whether a received ``X-Rapport-Signature`` matches the raw body (constant time)."""
    return hmac.compare_digest(sign(body, secret), signature)


class AnalysisWebhook:
    """Posts analyses to one URL, signed, in the background, with retries.

    Args:
        url: Where to POST (``RAPPORT_ANALYSIS_WEBHOOK_URL``).
        secret: The HMAC key (``RAPPORT_ANALYSIS_WEBHOOK_SECRET``).
        timeout: Seconds one attempt may take.
        retries: Attempts after the first before the delivery is given up.
        backoff_base: First delay between attempts, doubling after each.
        backoff_max: Longest delay between attempts, ``retry-after`` included.
    """

    def __init__(
        self,
        *,
        url: str,
        secret: str,
        timeout: float = 10.0,
        retries: int = 5,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        self._url = url
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retries = retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._session: aiohttp.ClientSession | None = None
        self._deliveries: set[asyncio.Task[bool]] = set()

    def submit(self, payload: Mapping[str, Any]) -> None:
        """Deliver ``payload`` in the background; returns at once."""
        task = asyncio.create_task(self.deliver(payload), name="analysis-webhook")
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def deliver(self, payload: Mapping[str, Any]) -> bool:
        """POST ``payload`` (``sent_at`` added), retrying until accepted or out of attempts.

        Returns:
            True when the receiver answered 2xx.
        """
        retry_after: float | None = None
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(
                    backoff_delay(
                        attempt, base=self._backoff_base, cap=self._backoff_max, floor=retry_after
                    )
                )
            body = json.dumps({**payload, "sent_at": now()}, separators=(",", ":")).encode()
            status, retry_after = await self._post(body)
            if status is not None and 200 <= status < 300:
                UPSTREAM.succeeded(Service.WEBHOOK)
                return True
            kind = status_kind(status) if status is not None else FailureKind.UNREACHABLE
            UPSTREAM.failed(Service.WEBHOOK, kind)
            if status is not None and status < 500 and status not in _RETRIED_STATUSES:
                logger.warning("The analysis webhook refused a delivery (HTTP {})", status)
                return False
        logger.warning("The analysis webhook failed {} times; delivery given up", self._retries + 1)
        return False

    async def _post(self, body: bytes) -> tuple[int | None, float | None]:
        """One attempt: the HTTP status (None when there was no answer) and ``retry-after``."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(body, self._secret)}
        try:
            async with self._session.post(self._url, data=body, headers=headers) as response:
                await response.read()
                return response.status, _seconds(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError):
            return None, None

    async def aclose(self, *, grace: float = 5.0) -> None:
        """Let deliveries in flight finish for up to ``grace`` seconds, then stop them."""
        if self._deliveries:
            _, late = await asyncio.wait(set(self._deliveries), timeout=grace)
            for task in late:
                task.cancel()
            if late:
                logger.warning("Stopped {} analysis webhook deliveries unfinished", len(late))
                await asyncio.gather(*late, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the backoff alone decides
