"""A local fake of the Twilio REST calls Rapport makes: updating a live call, and placing one.

- ``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`` with either
  ``Status=completed`` (hang up) or ``Twiml=<Response>...`` (run new TwiML on the live call: a
  transfer's ``<Dial>``), answered like Twilio answers it: 200 and the call resource as JSON
  (``completed``, or ``in-progress`` for new TwiML); a form with neither, or TwiML that is not
  XML, gets Twilio's 400.
- ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` (create a call) with ``To``, ``From``
  and exactly one of ``Url``, ``Twiml`` or ``ApplicationSid``: 201 and the new call resource
  (``queued``, ``outbound-api``, a fresh ``CA…`` sid). Refused as Twilio refuses: no ``To``
  (21201), no ``From`` (21213), a ``To`` or ``From`` that is not a number (21211, 21212), a
  ``From`` the account does not own (21210, when the fake is given the account's numbers),
  no instructions (21205), a ``Url`` that is not absolute http(s) (21205), nor a
  ``StatusCallback`` (21609), TwiML that is not XML
  (12100), a number the account may not call (21215, :attr:`FakeTwilioAPI.unreachable`).

Every request needs HTTP Basic auth (Twilio's 401 and error 20003 otherwise); given the
account's SID and auth token, the fake checks them too, and a path naming another account
gets 404 (20404). Error bodies are Twilio's: ``code``, ``message``, ``more_info``, ``status``.
Point ``TWILIO_API_BASE_URL`` at :attr:`FakeTwilioAPI.base_url`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import secrets
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from urllib.parse import urlsplit
from xml.etree import ElementTree

from aiohttp import web

from tests.fakes.local_server import LocalServer

_E164 = re.compile(r"\+[1-9]\d{6,14}")
_API = "/2010-04-01/Accounts/{account}"


@dataclass(frozen=True)
class CallUpdate:
    """One call update the fake received."""

    account_sid: str
    call_sid: str
    form: dict[str, str]
    basic_auth: tuple[str, str]
    #: When it arrived (``time.monotonic()``).
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class CreatedCall:
    """One call the fake placed (``Calls.json``): its sid and the form that created it."""

    account_sid: str
    sid: str
    form: dict[str, str]
    basic_auth: tuple[str, str]


def _error(status: int, code: int, message: str) -> web.Response:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status)


class FakeTwilioAPI(LocalServer):
    """Records call updates and created calls; ``async with`` starts it on 127.0.0.1.

    Args:
        account_sid: The account's SID; given, requests must authenticate as it.
        auth_token: The account's auth token (checked with ``account_sid``).
        numbers: The account's phone numbers; given, a call's ``From`` must be one of them.
    """

    def __init__(
        self,
        *,
        account_sid: str | None = None,
        auth_token: str | None = None,
        numbers: Collection[str] | None = None,
    ) -> None:
        self.updates: list[CallUpdate] = []
        self.created: list[CreatedCall] = []
        #: Numbers the account may not call (Twilio's 21215, geographic permissions).
        self.unreachable: set[str] = set()
        self.updated = asyncio.Event()
        super().__init__()
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._numbers = set(numbers) if numbers is not None else None

    @property
    def base_url(self) -> str:
        """The REST API root to configure."""
        return f"http://127.0.0.1:{self.port}"

    def route(self, app: web.Application) -> None:
        """``POST .../Calls.json`` (place a call) and ``.../Calls/{CallSid}.json`` (update one)."""
        app.router.add_post(f"{_API}/Calls.json", self._create)
        app.router.add_post(f"{_API}/Calls/{{call}}.json", self._update)

    def _authenticated(self, request: web.Request) -> tuple[str, str] | web.Response:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        try:
            user, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user = password = ""
        if scheme != "Basic" or not user:
            return _error(401, 20003, "Authenticate")
        if self._account_sid is not None and (user, password) != (
            self._account_sid,
            self._auth_token,
        ):
            return _error(401, 20003, "Authenticate")
        if self._account_sid is not None and request.match_info["account"] != user:
            return _error(404, 20404, "The requested resource was not found")
        return user, password

    async def _update(self, request: web.Request) -> web.Response:
        auth = self._authenticated(request)
        if isinstance(auth, web.Response):
            return auth
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
        self.updates.append(CallUpdate(account, call, form, auth))
        self.updated.set()
        return web.json_response({"sid": call, "account_sid": account, "status": status})

    async def _create(self, request: web.Request) -> web.Response:
        auth = self._authenticated(request)
        if isinstance(auth, web.Response):
            return auth
        form = {key: str(value) for key, value in (await request.post()).items()}
        refused = self._refusal(form)
        if refused is not None:
            return refused
        account = request.match_info["account"]
        sid = "CA" + secrets.token_hex(16)
        self.created.append(CreatedCall(account, sid, form, auth))
        return web.json_response(
            {
                "sid": sid,
                "account_sid": account,
                "to": form["To"],
                "from": form["From"],
                "status": "queued",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "uri": f"/2010-04-01/Accounts/{account}/Calls/{sid}.json",
            },
            status=201,
        )

    def _refusal(self, form: dict[str, str]) -> web.Response | None:
        to, sender = form.get("To", ""), form.get("From", "")
        if not to:
            return _error(400, 21201, "No 'To' number is specified")
        if not sender:
            return _error(400, 21213, "No 'From' number is specified")
        if not _E164.fullmatch(to):
            return _error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not _E164.fullmatch(sender):
            return _error(400, 21212, f"Invalid 'From' Phone Number: {sender}")
        if self._numbers is not None and sender not in self._numbers:
            return _error(
                400,
                21210,
                f"The source phone number provided, {sender}, is not yet verified for your "
                "account. You may only make calls from phone numbers that you've verified or "
                "purchased from Twilio.",
            )
        instructions = [name for name in ("Url", "Twiml", "ApplicationSid") if form.get(name)]
        if len(instructions) != 1:
            return _error(400, 21205, "Url parameter is required.")
        if "Url" in instructions and not _absolute(form["Url"]):
            return _error(400, 21205, f"Url is not a valid URL: {form['Url']}")
        if "StatusCallback" in form and not _absolute(form["StatusCallback"]):
            return _error(400, 21609, "Invalid StatusCallbackUrl")
        if "Twiml" in instructions and not _is_xml(form["Twiml"]):
            return _error(400, 12100, "Document parse failure")
        if to in self.unreachable:
            return _error(
                400,
                21215,
                f"Account not authorized to call {to}. Perhaps you need to enable some "
                "international permissions: https://www.twilio.com/console/voice/calls/"
                "geo-permissions/low-risk",
            )
        return None


def _absolute(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _is_xml(text: str) -> bool:
    try:
        ElementTree.fromstring(text)
    except ElementTree.ParseError:
        return False
    return True
