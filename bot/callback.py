"""Calling a caller back from the business's Twilio number, without showing anyone the number.

Two ways, both placed through Twilio's REST API (``calls.create``, the real SDK; its root is
``TWILIO_API_BASE_URL``, a local fake in tests) from ``RAPPORT_CALLBACK_FROM``:

- **A person calls back** (:meth:`CallbackDesk.bridge`): Twilio rings the person's own phone
  first, and once they answer, ``<Dial>`` bridges them to the caller. The caller's number goes
  to Twilio inside that TwiML and nowhere else; the person sees the business's number.
- **Rapport calls back** (:meth:`CallbackDesk.request_agent_callback`, placed by
  :class:`CallbackPlacer` in the bot): a queued request, placed when due and the business is
  open (``RAPPORT_BUSINESS_HOURS``), asked outside hours for the next opening. Twilio fetches the
  call's TwiML from our signed webhook (:func:`bot.twilio.add_twilio_routes`), which binds the
  stream to the call back with a :class:`bot.trust.StreamTokens` token; the call is then a normal
  Rapport call, trusted as the caller (the number came from our own store), and opens with the
  request's line ("Hi Ana, this is Acme Plumbing calling back about the burst pipe").

The number is opened from its seal (:meth:`memory.runtime.MemoryRuntime.callback_number`) only
to place the call or to show it to the person who asked; Twilio's error messages may quote it,
so only their codes are kept or logged.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

import aiohttp
from loguru import logger
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from bot.hours import BusinessHours
from bot.settings import BotSettings
from bot.twiml import hand_on_twiml
from bot.wording import callback_opening
from memory.errors import MemoryUnavailableError
from memory.language import primary_language
from memory.models import clean_text, now
from memory.privacy.identity import CallerIdentity
from memory.runtime import MemoryRuntime
from memory.store.callbacks import (
    MAX_REASON_CHARS,
    AgentCallback,
    AgentCallbacks,
    CallbackStatus,
    StaffPhones,
)
from memory.store.keys import CallRef

#: How long a REST request to Twilio may take.
TWILIO_TIMEOUT_S = 10.0
#: How long Twilio rings a phone before giving up (the person's, or the caller's).
RING_TIMEOUT_S = 30
#: How often the bot looks for call backs that are due.
PLACE_EVERY_S = 5.0
#: The webhook Twilio fetches a call back's TwiML from.
ANSWER_PATH = "/callback-answer"
#: The webhook Twilio tells how a call back ended (``StatusCallback``).
STATUS_PATH = "/callback-status"
#: A call back that ended with one of these Twilio statuses did not reach the caller: why.
UNANSWERED = {
    "busy": "the caller's line was busy",
    "no-answer": "the caller did not answer",
    "failed": "Twilio could not connect the call",
    "canceled": "the call was cancelled before it was answered",
}
#: Said to the person who answers before they are bridged to the caller.
BRIDGE_NOTICE = "Connecting you to the caller you are calling back."
#: Why a call back failed, by Twilio's error code: the reason a person is shown.
_TWILIO_REFUSALS = {
    20003: "Twilio refused the credentials (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)",
    20404: "Twilio does not know this account (TWILIO_ACCOUNT_SID)",
    21210: "RAPPORT_CALLBACK_FROM is not a number of this Twilio account",
    21211: "Twilio refused the number to call",
    21215: "this Twilio account may not call that country (geographic permissions)",
}


class CallbackError(Exception):
    """A call back that cannot be placed; the message is safe to show (it holds no number)."""


@dataclass(frozen=True, slots=True)
class TwilioAccount:
    """The Twilio account call backs are placed from.

    Attributes:
        account_sid: ``TWILIO_ACCOUNT_SID``.
        auth_token: ``TWILIO_AUTH_TOKEN``.
        business_number: ``RAPPORT_CALLBACK_FROM``, the number callers see.
        base_url: ``TWILIO_API_BASE_URL`` (None: Twilio's own).
    """

    account_sid: str
    auth_token: str = field(repr=False)
    business_number: str
    base_url: str | None = None

    @classmethod
    def from_settings(cls, settings: BotSettings) -> TwilioAccount:
        """The account of ``settings``.

        Raises:
            CallbackError: A variable it needs is not set (the message names them).
        """
        missing = [
            name
            for name, value in (
                ("TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
                ("TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
                ("RAPPORT_CALLBACK_FROM", settings.callback_from),
            )
            if not value
        ]
        if missing or not (
            settings.twilio_account_sid and settings.twilio_auth_token and settings.callback_from
        ):
            raise CallbackError(f"Calling back needs {', '.join(missing)} (see README, Dashboard)")
        return cls(
            account_sid=settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token,
            business_number=settings.callback_from,
            base_url=settings.twilio_api_base_url,
        )

    async def place_call(
        self,
        *,
        to: str,
        twiml: str | None = None,
        url: str | None = None,
        status_url: str | None = None,
    ) -> str:
        """Have Twilio call ``to`` from the business's number; the call's sid.

        Args:
            to: The number to ring (E.164).
            twiml: What the call runs once answered; or
            url: where Twilio fetches it (a signed webhook).
            status_url: Where Twilio says how the call ended (a signed webhook).

        Raises:
            CallbackError: Twilio refused the call or could not be reached.
        """
        http = AsyncTwilioHttpClient(timeout=TWILIO_TIMEOUT_S)
        client = Client(self.account_sid, self.auth_token, http_client=http)
        if self.base_url:
            client.api.base_url = self.base_url.rstrip("/")
        instructions = {"twiml": twiml} if twiml is not None else {"url": url or ""}
        if status_url is not None:
            instructions["status_callback"] = status_url
        try:
            call = await client.calls.create_async(
                to=to, from_=self.business_number, timeout=RING_TIMEOUT_S, **instructions
            )
        except TwilioRestException as e:
            # Only the code: Twilio's message may quote the number.
            logger.warning("Twilio refused a call back: error {}", e.code)
            reason = _TWILIO_REFUSALS.get(e.code or 0, f"Twilio refused the call (error {e.code})")
            raise CallbackError(reason) from None
        except (aiohttp.ClientError, TimeoutError) as e:
            logger.warning("Twilio could not be reached for a call back: {}", type(e).__name__)
            raise CallbackError("Twilio could not be reached; try again") from None
        finally:
            await http.close()
        return str(call.sid)


def callback_url(public_host: str, path: str, ref: CallRef) -> str:
    """A call back's webhook (:data:`ANSWER_PATH`, :data:`STATUS_PATH`) for Twilio to call.

    Twilio signs the whole URL, query included, so the follow-up it names cannot be changed.
    """
    query = urlencode({"caller": ref.caller_key, "call": ref.call_id})
    return f"https://{public_host}{path}?{query}"


@dataclass(slots=True)
class CallbackDesk:
    """Calling back one agent's callers: what the dashboard and ``calls callback`` share.

    Args:
        runtime: The memory (the sealed numbers).
        agent_id: The agent whose callers are called back.
        settings: The business's name, hours and Twilio account.
    """

    runtime: MemoryRuntime
    agent_id: str
    settings: BotSettings
    agent_callbacks: AgentCallbacks = field(init=False)
    staff_phones: StaffPhones | None = field(init=False)

    def __post_init__(self) -> None:
        prefix = self.runtime.settings.key_prefix
        self.agent_callbacks = AgentCallbacks(
            self.runtime.redis, prefix=prefix, retention_seconds=self.runtime.store.ttl_seconds
        )
        numbers = self.runtime.numbers
        self.staff_phones = (
            StaffPhones(self.runtime.redis, numbers=numbers, prefix=prefix) if numbers else None
        )

    @property
    def enabled(self) -> bool:
        """Whether callers' numbers are kept (``RAPPORT_CALLBACK_NUMBERS``)."""
        return self.runtime.numbers is not None

    def account(self) -> TwilioAccount:
        """The Twilio account call backs are placed from.

        Raises:
            CallbackError: It is not configured.
        """
        return TwilioAccount.from_settings(self.settings)

    async def number(self, caller: CallerIdentity) -> str:
        """The caller's number, opened from its seal.

        Raises:
            CallbackError: None is kept (numbers off, never kept, forgotten, or its key is gone).
        """
        if not self.enabled:
            raise CallbackError("Callers' numbers are not kept (RAPPORT_CALLBACK_NUMBERS=false)")
        number = await self.runtime.callback_number(caller)
        if number is not None:
            return number
        if await self.runtime.store.sealed_number(caller) is not None:
            raise CallbackError(
                "This caller's number was sealed with a number key this process does not have "
                "(RAPPORT_NUMBER_KEY_FILE: every process needs the same file; see README)"
            )
        raise CallbackError("No number is kept for this caller")

    async def bridge(self, caller: CallerIdentity, *, staff_phone: str) -> str:
        """Ring ``staff_phone``, then bridge it to the caller from the business's number.

        Returns:
            The sid of the call to the person's phone.

        Raises:
            CallbackError: No number kept, Twilio not configured, or Twilio refused.
        """
        account = self.account()
        number = await self.number(caller)
        twiml = hand_on_twiml(
            say=BRIDGE_NOTICE, locale="en-US", target=number, caller_id=account.business_number
        )
        return await account.place_call(to=staff_phone, twiml=twiml)

    async def request_agent_callback(
        self, caller: CallerIdentity, call_id: str, *, by: str, reason: str
    ) -> AgentCallback:
        """Queue Rapport's call back of one follow-up: now when open, else at the next opening.

        Args:
            caller: Whose follow-up.
            call_id: The follow-up's call.
            by: Who asked.
            reason: What the call back is about, in the caller's words ("the burst pipe").

        Raises:
            CallbackError: No number is kept, Twilio is not configured, or the business has no
                opening ahead.
        """
        self.account()
        await self.number(caller)
        memory = await self.runtime.store.load(caller)
        language = primary_language(memory.profile.language or "") or "en"
        topic = clean_text(reason, MAX_REASON_CHARS)
        callback = AgentCallback(
            call_id=call_id,
            requested_by=by,
            due_at=_next_open(self.settings.business_hours, now()),
            opening=callback_opening(
                memory, topic, business_name=self.settings.business_name, language=language
            ),
        )
        await self.agent_callbacks.save(caller, callback)
        return callback


def _next_open(hours: BusinessHours | None, at: float) -> float:
    """``at`` when the business is open then, else its next opening.

    Raises:
        CallbackError: No opening in the coming weeks.
    """
    if hours is None:
        return at
    moment = datetime.fromtimestamp(at, tz=UTC)
    if hours.is_open(moment):
        return at
    opening = hours.next_opening(moment)
    if opening is None:
        raise CallbackError("The business has no opening hours in the coming weeks")
    return opening.timestamp()


class CallbackPlacer:
    """Places the call backs that are due, while the business is open (run by the bot).

    Args:
        desk: The agent's call backs.
        public_host: Where Twilio reaches this server (``RAPPORT_PUBLIC_URL``).
    """

    def __init__(self, desk: CallbackDesk, *, public_host: str) -> None:
        self._desk = desk
        self._public_host = public_host

    async def run(self, stop: asyncio.Event) -> None:
        """Place due call backs every :data:`PLACE_EVERY_S` until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.place_due()
            except MemoryUnavailableError:
                logger.debug("Redis did not answer the call back placer; retrying later")
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), PLACE_EVERY_S)

    async def place_due(self) -> int:
        """Place every call back due now (or move it to the next opening); how many were placed."""
        desk = self._desk
        placed = 0
        for ref in await desk.agent_callbacks.due(desk.agent_id):
            if not await desk.agent_callbacks.claim(ref):
                continue  # another bot is placing it
            caller = await desk.runtime.store.caller_of(ref)
            callback = await desk.agent_callbacks.get(caller, ref.call_id)
            if callback is None or callback.status != CallbackStatus.QUEUED:
                continue  # forgotten, expired, or done meanwhile
            placed += await self._place(caller, ref, callback)
        return placed

    async def _place(self, caller: CallerIdentity, ref: CallRef, callback: AgentCallback) -> int:
        desk = self._desk
        try:
            due = _next_open(desk.settings.business_hours, now())
            if due > now():  # closed now: the hours changed, or it came due at closing time
                await desk.agent_callbacks.save(caller, callback.model_copy(update={"due_at": due}))
                return 0
            number = await desk.number(caller)
            sid = await desk.account().place_call(
                to=number,
                url=callback_url(self._public_host, ANSWER_PATH, ref),
                status_url=callback_url(self._public_host, STATUS_PATH, ref),
            )
        except CallbackError as e:
            failed = {"status": CallbackStatus.FAILED, "error": str(e)}
            await desk.agent_callbacks.save(
                caller, callback.model_copy(update={**failed, "attempts": callback.attempts + 1})
            )
            logger.warning("A call back of {} failed", caller.masked)
            return 0
        placed = {"status": CallbackStatus.PLACED, "call_sid": sid, "error": None}
        await desk.agent_callbacks.save(
            caller, callback.model_copy(update={**placed, "attempts": callback.attempts + 1})
        )
        logger.info("Rapport is calling {} back", caller.masked)
        return 1

    async def ended(self, ref: CallRef, status: str) -> None:
        """Twilio says how a placed call back ended: one that reached nobody is kept as failed.

        Args:
            ref: The follow-up the call back was about.
            status: Twilio's final ``CallStatus`` (``completed``, ``no-answer``, ``busy``...).
        """
        if status not in UNANSWERED:
            return
        caller = await self._desk.runtime.store.caller_of(ref)
        callback = await self._desk.agent_callbacks.get(caller, ref.call_id)
        if callback is None or callback.status != CallbackStatus.PLACED:
            return
        failed = {"status": CallbackStatus.FAILED, "error": UNANSWERED[status]}
        await self._desk.agent_callbacks.save(caller, callback.model_copy(update=failed))
        logger.info("A call back of {} reached nobody ({})", caller.masked, status)

    async def opening(self, caller: CallerIdentity, call_id: str) -> str | None:
        """What a call back opens with, once the caller answered (None: not a queued one)."""
        callback = await self._desk.agent_callbacks.get(caller, call_id)
        return callback.opening if callback is not None else None
