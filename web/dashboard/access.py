"""Who may use the dashboard: the password, session cookies, CSRF tokens and login throttling.

- A password (``RAPPORT_DASHBOARD_PASSWORD``) is required whenever the server listens beyond
  loopback; without one, only a loopback server opens the dashboard to whoever reaches it.
- A session is a signed cookie (``HttpOnly``, ``SameSite=Strict``, ``Secure`` when the request
  came over HTTPS, directly or as ``X-Forwarded-Proto``), signed with the session key
  (``RAPPORT_DASHBOARD_SESSION_KEY``, or the key file ``RAPPORT_DASHBOARD_KEY_FILE`` generated
  once like the pepper): every process with the same key accepts the session, and a restart
  logs nobody out.
- Every POST carries a CSRF token bound to the session (the login form's to a login cookie).
- Failed logins are throttled per client address and login name, counted in Redis by every
  process (:mod:`web.dashboard.throttle`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.requests import Request
from starlette.responses import Response

from bot.hours import BusinessHours, known_zone
from bot.trust import is_loopback
from memory.errors import ConfigurationError
from memory.privacy.identity import config_file, generated_secret
from web.dashboard.throttle import InProcessThrottle, LoginThrottle

SESSION_COOKIE = "rapport_session"
LOGIN_COOKIE = "rapport_login"
#: How long a session lasts without logging in again.
SESSION_SECONDS = 12 * 3600
#: The name used for changes made on an open (loopback, password-less) dashboard.
LOCAL_USER = "local"
PASSWORD_VARIABLE = "RAPPORT_DASHBOARD_PASSWORD"
SESSION_KEY_VARIABLE = "RAPPORT_DASHBOARD_SESSION_KEY"
KEY_FILE_VARIABLE = "RAPPORT_DASHBOARD_KEY_FILE"
#: Shortest session key accepted from the setting.
MIN_SESSION_KEY_CHARS = 32
#: The generated key file's name in the config folder, beside the pepper.
KEY_FILENAME = "dashboard-key"
#: Shortest password a dashboard reachable beyond loopback accepts (five failed logins a
#: minute per address leave a long one out of reach).
MIN_PASSWORD_CHARS = 12


class DashboardSettings(BaseSettings):
    """The dashboard's password, session key and time zone, from the environment."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    password: SecretStr | None = Field(default=None, alias=PASSWORD_VARIABLE, repr=False)
    session_key: SecretStr | None = Field(default=None, alias=SESSION_KEY_VARIABLE, repr=False)
    key_file: Path | None = Field(default=None, alias=KEY_FILE_VARIABLE)
    #: The business's opening hours: their time zone is the dashboard's.
    business_hours: BusinessHours | None = Field(default=None, alias="RAPPORT_BUSINESS_HOURS")
    #: The time zone pages show times in when no business hours are set (IANA name).
    timezone: str = Field(default="UTC", alias="RAPPORT_TIMEZONE")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        return known_zone(name)

    def zone(self) -> ZoneInfo:
        """The business's time zone: its opening hours', else ``RAPPORT_TIMEZONE``."""
        return ZoneInfo(self.business_hours.timezone if self.business_hours else self.timezone)

    def access(self, host: str) -> DashboardAccess:
        """The access checks of a server listening on ``host``.

        Raises:
            ConfigurationError: ``host`` is beyond loopback and no password is set, or the
                session key is too short or its file cannot be read or written.
        """
        password = self.password.get_secret_value() if self.password else None
        require_password_beyond_loopback(host, password)
        return DashboardAccess(password=password or None, key=self.signing_key())

    def signing_key(self) -> bytes:
        """The key sessions and CSRF tokens are signed with, the same in every process.

        ``RAPPORT_DASHBOARD_SESSION_KEY`` when set; otherwise the key file
        (``RAPPORT_DASHBOARD_KEY_FILE``, default ``$XDG_CONFIG_HOME/rapport/dashboard-key``),
        generated on first use.

        Raises:
            ConfigurationError: The key is too short, or its file cannot be read or written.
        """
        if self.session_key is not None and self.session_key.get_secret_value().strip():
            key = self.session_key.get_secret_value()
            if len(key) < MIN_SESSION_KEY_CHARS:
                raise ConfigurationError(
                    f"{SESSION_KEY_VARIABLE} must be at least {MIN_SESSION_KEY_CHARS} characters"
                )
            return key.encode()
        path = (self.key_file or config_file(KEY_FILENAME)).expanduser()
        try:
            stored = generated_secret(path)
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigurationError(f"{KEY_FILE_VARIABLE} cannot be read or written") from e
        if len(stored) < MIN_SESSION_KEY_CHARS:
            raise ConfigurationError(f"{KEY_FILE_VARIABLE} holds a key that is too short")
        return stored.encode()


def require_password_beyond_loopback(host: str, password: str | None) -> None:
    """Refuse to serve the dashboard beyond loopback without a password of a useful length.

    Raises:
        ConfigurationError: ``host`` is not loopback and the password is unset or shorter than
            ``MIN_PASSWORD_CHARS``.
    """
    if is_loopback(host):
        return
    if not password:
        raise ConfigurationError(
            f"{PASSWORD_VARIABLE} is not set: the dashboard listens on {host}, beyond loopback, "
            "and needs a password"
        )
    if len(password) < MIN_PASSWORD_CHARS:
        raise ConfigurationError(
            f"{PASSWORD_VARIABLE} is too short: the dashboard listens on {host}, beyond "
            f"loopback, and needs a password of at least {MIN_PASSWORD_CHARS} characters"
        )


def is_https(request: Request) -> bool:
    """Whether the browser reached us over HTTPS (directly, or through a proxy that says so)."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in user: the name they gave (for the audit list) and the session's nonce."""

    user: str
    nonce: str


@dataclass
class DashboardAccess:
    """Checks logins and signs sessions and CSRF tokens.

    Args:
        password: The dashboard password; None opens the dashboard (loopback servers only).
        key: Signs sessions and CSRF tokens (:meth:`DashboardSettings.signing_key`).
        throttle: Where failed logins are counted.
    """

    password: str | None
    key: bytes = field(repr=False)
    throttle: LoginThrottle = field(default_factory=InProcessThrottle, repr=False)

    @property
    def open(self) -> bool:
        """True when no password is asked for."""
        return not self.password

    def _sign(self, text: str) -> str:
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    # -- logins ------------------------------------------------------------------------------

    async def check_password(self, address: str, name: str, password: str) -> bool:
        """Compare in constant time; the throttle counts a failure, or clears on success.

        Args:
            address: The client's address.
            name: The name typed to log in with.
            password: The password typed.
        """
        if self.password and hmac.compare_digest(password.encode(), self.password.encode()):
            await self.throttle.succeeded(address, name)
            return True
        await self.throttle.failed(address, name)
        return False

    def login_token(self, nonce: str) -> str:
        """The CSRF token of the login form shown with the login cookie ``nonce``."""
        return self._sign(f"login:{nonce}")

    # -- sessions ----------------------------------------------------------------------------

    def session_cookie(self, user: str) -> str:
        """A signed session for ``user``."""
        expires = time.time() + SESSION_SECONDS
        body = json.dumps({"u": user, "n": secrets.token_hex(16), "e": expires})
        encoded = base64.urlsafe_b64encode(body.encode()).decode()
        return f"{encoded}.{self._sign(encoded)}"

    def session(self, request: Request) -> Session | None:
        """The request's valid session, or None (an open dashboard always has one)."""
        if self.open:
            return Session(user=LOCAL_USER, nonce="open")
        cookie = request.cookies.get(SESSION_COOKIE, "")
        encoded, _, signature = cookie.partition(".")
        if not encoded or not hmac.compare_digest(signature, self._sign(encoded)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(encoded))
            if float(data["e"]) < time.time():
                return None
            return Session(user=str(data["u"]), nonce=str(data["n"]))
        except (ValueError, KeyError, TypeError):
            return None

    def csrf_token(self, session: Session) -> str:
        """The CSRF token every form of this session carries."""
        return self._sign(f"csrf:{session.nonce}")

    def csrf_valid(self, session: Session, token: str) -> bool:
        """Whether a POSTed token belongs to this session."""
        return hmac.compare_digest(token.encode(), self.csrf_token(session).encode())

    @staticmethod
    def set_cookie(response: Response, request: Request, name: str, value: str, age: int) -> None:
        """Set a cookie the way every dashboard cookie is set."""
        response.set_cookie(
            name,
            value,
            max_age=age,
            path="/dashboard",
            httponly=True,
            secure=is_https(request),
            samesite="strict",
        )
