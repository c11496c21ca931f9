"""Daily dial-in webhooks: with the configuration's HMAC secret set, only Daily's signed ones pass.

The check is ASGI middleware in front of the runner's ``/daily-dialin-webhook``; here it guards a
stand-in route that records what reached it, driven over HTTP with FastAPI's test client.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from bot.daily import DIALIN_PATH, DialinSignatureCheck

SECRET = base64.b64encode(b"daily-dialin-secret-0123456789").decode()
BODY = json.dumps({"From": "+14155550123", "To": "+34600111222", "callId": "c", "callDomain": "d"})


def signed(body: str, *, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    """The headers Daily sends with a dial-in webhook it signed."""
    timestamp = str(int(at if at is not None else time.time()))
    key = base64.b64decode(secret)
    digest = hmac.new(key, f"{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return {
        "X-Pinless-Timestamp": timestamp,
        "X-Pinless-Signature": base64.b64encode(digest).decode(),
        "Content-Type": "application/json",
    }


@pytest.fixture
def reached() -> list[bytes]:
    return []


@pytest.fixture
def client(reached: list[bytes]) -> TestClient:
    app = FastAPI()

    @app.post(DIALIN_PATH)
    async def dialin(request: Request) -> dict[str, str]:
        reached.append(await request.body())
        return {"status": "room created"}

    @app.post("/elsewhere")
    async def elsewhere() -> dict[str, str]:
        return {"status": "untouched"}

    app.add_middleware(DialinSignatureCheck, secret=SECRET)
    return TestClient(app)


def test_a_signed_webhook_reaches_the_runner_with_its_body(
    client: TestClient, reached: list[bytes]
) -> None:
    response = client.post(DIALIN_PATH, content=BODY, headers=signed(BODY))
    assert response.status_code == 200
    assert reached == [BODY.encode()]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        signed(BODY, secret=base64.b64encode(b"another secret entirely").decode()),
        signed(BODY.replace("+14155550123", "+14155550188")),
        signed(BODY, at=time.time() - 3600),  # a captured request, replayed an hour later
        {"X-Pinless-Timestamp": "soon", "X-Pinless-Signature": "x"},
    ],
    ids=["unsigned", "wrong secret", "altered body", "stale", "garbage"],
)
def test_an_unsigned_or_badly_signed_webhook_gets_401(
    client: TestClient, reached: list[bytes], headers: dict[str, str]
) -> None:
    response = client.post(DIALIN_PATH, content=BODY, headers=headers)
    assert response.status_code == 401
    assert reached == []


def test_other_routes_pass_untouched(client: TestClient) -> None:
    assert client.post("/elsewhere").json() == {"status": "untouched"}
