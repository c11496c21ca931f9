"""A local fake of the Twilio REST call the bot makes: updating a live call.

``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with HTTP Basic auth (account
SID, auth token) and either ``Status=completed`` (hang up) or ``Twiml=<Response>...`` (run new
TwiML on the live call: a transfer's ``<Dial>``), answered like Twilio answers it: 200 and the
call resource as JSON (``completed``, or ``in-progress`` for new TwiML); a form with neither, or
TwiML that is not XML, gets Twilio's 400. Point ``TWILIO_API_BASE_URL`` at
:attr:`FakeTwilioAPI.base_url`.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass, field
from xml.etree import ElementTree

from aiohttp import web


@dataclass(frozen=True)
class CallUpdate:
    """One call update the fake received."""

    account_sid: str
    call_sid: str
    form: dict[str, str]
    basic_auth: tuple[str, str]
    #: When it arrived (``time.monotonic()``).
    at: float = field(default_factory=time.monotonic)


class FakeTwilioAPI:
    """Records call updates; ``async with`` starts it on 127.0.0.1, ephemeral port."""

    def __init__(self) -> None:
        self.updates: list[CallUpdate] = []
        self.updated = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def base_url(self) -> str:
        """The REST API root to configure."""
        return f"http://127.0.0.1:{self._port}"

    async def __aenter__(self) -> FakeTwilioAPI:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Calls/{call}.json", self._update)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _update(self, request: web.Request) -> web.Response:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Basic":
            return web.json_response({"code": 20003, "message": "Authenticate"}, status=401)
        user, _, password = base64.b64decode(credentials).decode().partition(":")
        form = {key: str(value) for key, value in (await request.post()).items()}
        account, call = request.match_info["account"], request.match_info["call"]
        if form.get("Status") == "completed":
            status = "completed"
        elif "Twiml" in form and _is_xml(form["Twiml"]):
            status = "in-progress"
        else:
            return web.json_response(
                {"code": 21220, "message": "Invalid call state or TwiML", "status": 400},
                status=400,
            )
        self.updates.append(CallUpdate(account, call, form, (user, password)))
        self.updated.set()
        return web.json_response({"sid": call, "account_sid": account, "status": status})


def _is_xml(text: str) -> bool:
    try:
        ElementTree.fromstring(text)
    except ElementTree.ParseError:
        return False
    return True
