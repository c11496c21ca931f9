"""Who is calling, as far as it can be proved: trust levels, stream tokens, signed webhooks.

A caller id is a claim. Each door proves what it can, and a call carries the result as a
:class:`memory.models.CallTrust`:

- **Twilio.** The voice webhook is signed by Twilio (``X-Twilio-Signature``, checked in
  :mod:`bot.twilio`) and carries the carrier's STIR/SHAKEN verdict (``StirVerstat``). The TwiML
  we answer with hands the Media Stream a :class:`StreamTokens` token that binds the CallSid,
  both numbers and the verdict together; ``/ws`` accepts a stream only with a valid, unexpired,
  unused token, so a WebSocket client cannot claim a number, nor replay a real call's token.
  A token is used up in Redis (:class:`UsedTokens`), so it is single-use across every process
  that shares it.
- **Daily dial-in.** With the pinless dial-in HMAC secret set, every dial-in webhook must carry
  Daily's signature (:func:`daily_signature_valid`); then the SIP headers Daily forwards can be
  believed for an attestation too.
- **Call backs.** A call Rapport places to a caller (``bot.callback``) fetches its TwiML from a
  signed webhook too; its stream's token binds :data:`CALLBACK_ATTESTATION` and the call back's
  reference, and the callee is trusted as the caller: the number came from our own store.
- **The local test room** is a channel the business controls, but only on loopback (or when
  explicitly enabled): anywhere else a claimed number in ``/start`` is ignored.

What an unverified caller gets is a setting (``RAPPORT_UNVERIFIED_CALLERS``), applied in
:func:`bot.pipeline.prepare_call`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

from loguru import logger
from redis.asyncio import Redis

from memory.backend.reply import redis_reply
from memory.errors import MemoryUnavailableError
from memory.models import CallTrust

#: The STIR/SHAKEN verdict of a call whose number the originating carrier fully vouched for.
ATTESTED = "TN-Validation-Passed-A"
#: The attestation our own call backs' streams carry, followed by the call back's reference: the
#: number came from our own store, so the callee is the caller (see ``bot.callback``).
CALLBACK_ATTESTATION = "rapport-callback:"
#: How long the stream token of a TwiML answer stays valid: Twilio connects within seconds.
STREAM_TOKEN_TTL_S = 60
#: How far a signed Daily webhook's timestamp may be from our clock.
DAILY_SIGNATURE_TOLERANCE_S = 300

_FIELD = "\x1f"


class UnverifiedCallers(StrEnum):
    """What a caller whose number is only claimed gets.

    ``none``: served like an anonymous caller (no memory read, nothing recorded), the default;
    ``full``: their memory, as for a verified caller.
    """

    NONE = "none"
    FULL = "full"


def attestation_trust(verstat: str | None) -> CallTrust:
    """The trust level of a call from its STIR/SHAKEN verdict (``StirVerstat``/``verstat``)."""
    return CallTrust.VERIFIED if (verstat or "").strip() == ATTESTED else CallTrust.UNVERIFIED


def sip_attestation(sip_headers: Mapping[str, Any] | None) -> str | None:
    """The ``verstat`` parameter of forwarded SIP headers (``From``, ``P-Asserted-Identity``).

    Carriers put the verdict on the identity headers as ``;verstat=TN-Validation-Passed-A``.
    """
    for value in (sip_headers or {}).values():
        if not isinstance(value, str):
            continue
        for parameter in value.replace(">", ";").split(";"):
            name, _, verdict = parameter.strip().partition("=")
            if name.lower() == "verstat" and verdict:
                return verdict.strip()
    return None


class UsedTokens:
    """The stream tokens already redeemed: in Redis, so every process sharing it refuses a replay.

    Each redeemed token is one key, set only if absent (``SET NX``) and expiring with the token,
    so the set never grows past the tokens still valid. Until the process has Redis (memory off,
    or not opened yet) or while Redis does not answer, tokens are used up in this process only:
    a call is never refused because Redis is slow, and such a call has no memory to protect.

    Args:
        redis: The process's Redis client, once it has one (None: this process only).
        prefix: The key prefix (``RAPPORT_KEY_PREFIX``).
    """

    def __init__(
        self, redis: Callable[[], Redis | None] = lambda: None, *, prefix: str = "rapport"
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._here: dict[str, float] = {}

    async def use(self, nonce: str, *, expiry: float) -> bool:
        """Use up the token with ``nonce`` until ``expiry`` (epoch); False when it was used."""
        now = time.time()
        self._here = {used: until for used, until in self._here.items() if until >= now}
        if nonce in self._here:
            return False
        self._here[nonce] = expiry
        redis = self._redis()
        if redis is None:
            return True
        lifetime_ms = max(1, int((expiry - now) * 1000))
        key = f"{self._prefix}:stream-token:{nonce}"
        try:
            return bool(await redis_reply(redis.set(key, b"1", nx=True, px=lifetime_ms)))
        except MemoryUnavailableError:
            logger.warning("Redis did not answer: a stream token was used up in this process only")
            return True


class StreamTokens:
    """Short-lived, single-use tokens binding a Media Stream to the call Twilio announced.

    A token is ``expiry.nonce.signature``, the signature an HMAC over the CallSid, both numbers,
    the attestation, the expiry and the nonce. Any process that shares the secret can check it
    (a webhook answered by one process, a stream taken by another); ``used`` makes it single-use
    across the processes that share its Redis.

    Args:
        secret: The server secret (at least 16 bytes).
        ttl_s: How long a token stays valid.
        used: Where redeemed tokens are kept (default: this process only).
    """

    def __init__(
        self, secret: bytes, *, ttl_s: float = STREAM_TOKEN_TTL_S, used: UsedTokens | None = None
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the stream token secret must be at least 16 bytes")
        self._secret = secret
        self._ttl_s = ttl_s
        self._used = used or UsedTokens()

    def issue(self, *, call_sid: str, from_number: str, to_number: str, attestation: str) -> str:
        """A token for the stream of this call, valid for ``ttl_s``."""
        expiry = str(int(time.time() + self._ttl_s))
        nonce = secrets.token_hex(8)
        fields = (call_sid, from_number, to_number, attestation, expiry, nonce)
        return f"{expiry}.{nonce}.{self._sign(fields)}"

    async def redeem(
        self, token: str, *, call_sid: str, from_number: str, to_number: str, attestation: str
    ) -> bool:
        """Whether ``token`` was issued for exactly this call and is fresh; it is then used up."""
        expiry, _, rest = token.partition(".")
        nonce, _, signature = rest.partition(".")
        fields = (call_sid, from_number, to_number, attestation, expiry, nonce)
        if not (expiry.isdigit() and nonce and signature):
            return False
        if not hmac.compare_digest(self._sign(fields), signature):
            return False
        if time.time() > int(expiry):
            return False
        return await self._used.use(nonce, expiry=float(expiry))

    def _sign(self, fields: tuple[str, ...]) -> str:
        message = _FIELD.join(fields).encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()


def stream_token_secret(auth_token: str) -> bytes:
    """The stream tokens' secret, derived from the Twilio auth token every process shares."""
    return hmac.new(auth_token.encode(), b"rapport stream token v1", hashlib.sha256).digest()


def daily_signature_valid(
    *, secret: str, body: bytes, timestamp: str | None, signature: str | None
) -> bool:
    """Check a Daily pinless dial-in webhook's signature.

    Daily signs ``timestamp + "." + body`` with HMAC-SHA256 under the base64-decoded secret of
    the dial-in configuration, and sends the base64 digest in ``X-Pinless-Signature`` with the
    timestamp in ``X-Pinless-Timestamp``. An old timestamp is refused: a captured request
    cannot be replayed later.

    Args:
        secret: The configuration's ``hmac`` value (base64), ``RAPPORT_DAILY_DIALIN_HMAC``.
        body: The raw request body.
        timestamp: The timestamp header (Unix seconds or milliseconds).
        signature: The signature header.
    """
    if not timestamp or not signature:
        return False
    try:
        key = base64.b64decode(secret, validate=True)
        sent = float(timestamp)
    except (binascii.Error, ValueError):
        return False
    sent = sent / 1000 if sent > 1e11 else sent  # milliseconds
    if abs(time.time() - sent) > DAILY_SIGNATURE_TOLERANCE_S:
        return False
    digest = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(digest).decode(), signature.strip())


def is_loopback(host: str) -> bool:
    """True when ``host`` (an address or ``localhost``) only listens on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
