r"""Who is calling: caller ids normalised to E.164 and turned into keyed, non-reversible keys.

Phone numbers have a small key space, so a plain hash of one is reversible by enumeration. A
caller's storage key is therefore ``HMAC-SHA256(pepper, agent_id + "\x1f" + e164)``: without the
pepper nobody can map a key back to a number. The raw number is never kept in a
:class:`CallerIdentity`, so it cannot end up in storage or a log by accident; logs use
:func:`mask_number`.

Validity rule: a caller id is accepted only when ``phonenumbers.is_valid_number`` holds for it.
That rejects garbage and the keypad spellings carriers send for withheld ids (Twilio's
``+266696687`` "ANONYMOUS" and friends), and still accepts the fictional ``555-01xx`` test
numbers (``+1 415 555 0123`` is valid in the library's metadata).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import phonenumbers
from loguru import logger

from memory.errors import ConfigurationError, InvalidIdentityError

#: Longest caller id looked at; longer input is anonymous without being parsed.
MAX_RAW_CHARS = 64
#: Shortest accepted ``RAPPORT_PEPPER``.
MIN_PEPPER_CHARS = 16
#: Longest agent id.
MAX_AGENT_ID_CHARS = 64
#: Name of the generated pepper file (in the old layout, inside the data directory).
PEPPER_FILENAME = "pepper"

_KEY_VERSION = "v1"
# Unit separator: cannot occur in a valid agent id, so agent/number boundaries never collide.
_KEY_SEPARATOR = "\x1f"
_MASK = "•••"
_WITHHELD_MARKERS = frozenset(
    {"anonymous", "restricted", "unknown", "private", "withheld", "unavailable", "blocked"}
)
_AGENT_ID = re.compile(r"[A-Za-z0-9_.-]+")
# What may remain of a caller id once any URI around it is removed. No letters: vanity spellings
# and extensions are not caller ids.
_DIALLABLE = re.compile(r"\+?[\d\s().\-/]+")
_E164 = re.compile(r"\+[1-9]\d{1,14}")


def _number_part(raw: str) -> str:
    """Extract the number from a caller id: a SIP URI's user part, a tel URI's body."""
    text = raw.strip()
    # A SIP name-addr, "Name" <sip:...>, maybe with header parameters after it (;tag=...).
    opening = text.rfind("<")
    if opening != -1 and text.find(">", opening) != -1:
        text = text[opening + 1 : text.index(">", opening)].strip()
    lowered = text.lower()
    for scheme in ("sips:", "sip:", "tel:"):
        if lowered.startswith(scheme):
            text = text[len(scheme) :]
            break
    # sip:user:password@host;params and tel:+1-415;phone-context=...: keep the user part only.
    text = text.split("@", 1)[0].split(";", 1)[0].split(":", 1)[0]
    return unquote(text).strip()


def normalize_number(raw: str | None, *, default_region: str = "US") -> str | None:
    """Normalise a caller id to E.164.

    Accepts national formats (read in ``default_region``), international ``+`` and ``00``
    prefixes, the region's own international prefix (``011`` in the US), ``tel:`` and ``sip:``
    URIs, and spaces, dashes, dots, slashes and parentheses between digits.

    Args:
        raw: The caller id as the transport reported it.
        default_region: ISO 3166 region for numbers written without a country code.

    Returns:
        The number as ``+<digits>``, or None when the caller is anonymous: no id, a withheld
        marker (``anonymous``, ``restricted``, ...), text that is not a number, input longer than
        ``MAX_RAW_CHARS``, or a number ``phonenumbers.is_valid_number`` rejects.

    """
    if raw is None or len(raw) > MAX_RAW_CHARS:
        return None
    candidate = _number_part(raw)
    if candidate.lower() in _WITHHELD_MARKERS or not _DIALLABLE.fullmatch(candidate):
        return None
    compact = re.sub(r"[\s().\-/]", "", candidate)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    try:
        number = phonenumbers.parse(compact, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask_number(e164: str) -> str:
    """Mask an E.164 number for logs and stored records, e.g. ``+14155550123`` -> ``+1•••23``.

    Shows the country code and the last two digits only: a stored masked number must not
    narrow the search for the number (a handful of hidden digits is enumerated in
    milliseconds). Never raises: anything that is not an E.164 number is masked completely.

    Args:
        e164: A number as returned by :func:`normalize_number`.

    Returns:
        The masked form, safe to log and to store.

    """
    if not _E164.fullmatch(e164):
        return _MASK
    try:
        country_code = str(phonenumbers.parse(e164).country_code)
    except phonenumbers.NumberParseException:
        return _MASK
    national = e164[1 + len(country_code) :]
    tail = min(2, max(len(national) - 5, 0))
    return f"+{country_code}{_MASK}{national[len(national) - tail :]}"


def validate_agent_id(agent_id: str) -> str:
    """Check an agent id: 1-64 characters from ``A-Z a-z 0-9 _ . -``.

    Args:
        agent_id: The business line that was called.

    Returns:
        The agent id unchanged.

    Raises:
        InvalidIdentityError: The agent id is empty, too long or has other characters.

    """
    if len(agent_id) > MAX_AGENT_ID_CHARS or not _AGENT_ID.fullmatch(agent_id):
        raise InvalidIdentityError("agent id must be 1-64 characters of A-Z a-z 0-9 _ . -")
    return agent_id


def caller_key(pepper: bytes, agent_id: str, e164: str) -> str:
    r"""Compute the storage key of one caller of one agent: ``v1.`` + hex HMAC-SHA256.

    Args:
        pepper: The secret from :func:`load_pepper`.
        agent_id: The business line that was called.
        e164: The caller's number as returned by :func:`normalize_number`.

    Returns:
        ``"v1." + hex(HMAC-SHA256(pepper, agent_id + "\x1f" + e164))``.

    Raises:
        InvalidIdentityError: The agent id is invalid or ``e164`` is not an E.164 number.

    """
    validate_agent_id(agent_id)
    if not _E164.fullmatch(e164):
        raise InvalidIdentityError("caller number is not in E.164 form")
    message = f"{agent_id}{_KEY_SEPARATOR}{e164}".encode()
    return f"{_KEY_VERSION}.{hmac.new(pepper, message, hashlib.sha256).hexdigest()}"


@dataclass(frozen=True, slots=True)
class CallerIdentity:
    """A known caller of one agent. Holds no raw number, so none can be stored by accident."""

    agent_id: str
    key: str
    masked: str

    @property
    def hash_tag(self) -> str:
        """The Redis hash tag body shared by every key of this caller: ``agent_id:key``."""
        return f"{self.agent_id}:{self.key}"


def identify(
    raw: str | None, *, agent_id: str, pepper: bytes, default_region: str = "US"
) -> CallerIdentity | None:
    """Identify a caller from the caller id the transport reported.

    Args:
        raw: The caller id (number, ``tel:``/``sip:`` URI, withheld marker or None).
        agent_id: The business line that was called.
        pepper: The secret from :func:`load_pepper`.
        default_region: ISO 3166 region for numbers written without a country code.

    Returns:
        The caller's identity, or None when the caller is anonymous (never recorded).

    Raises:
        InvalidIdentityError: The agent id is invalid.

    """
    validate_agent_id(agent_id)
    e164 = normalize_number(raw, default_region=default_region)
    if e164 is None:
        return None
    return CallerIdentity(
        agent_id=agent_id, key=caller_key(pepper, agent_id, e164), masked=mask_number(e164)
    )


def default_pepper_file() -> Path:
    """Where the generated pepper lives by default: the user's config folder, not the data's.

    ``$XDG_CONFIG_HOME/rapport/pepper``, or ``~/.config/rapport/pepper``. Apart from the data
    folder, so a copy of the data (a backup, a stolen disk image) cannot be keyed back to numbers.
    """
    return config_file(PEPPER_FILENAME)


def config_file(name: str) -> Path:
    """A file of Rapport's in the user's config folder: ``$XDG_CONFIG_HOME/rapport/<name>``."""
    config_home = os.environ.get("XDG_CONFIG_HOME", "").strip()
    base = Path(config_home) if config_home else Path.home() / ".config"
    return base / "rapport" / name


def generated_secret(path: Path) -> str:
    """The secret kept in ``path``, generated there on first use (64 hex characters, mode 0600).

    Every process that reads the same file gets the same secret, also when several start at
    once (the first to create the file wins, see :func:`_write_secret_file`).

    Raises:
        OSError: The file cannot be read or written.
        UnicodeDecodeError: The file holds something other than text.
    """
    if not path.exists():
        _write_secret_file(path, secrets.token_hex(32))
    return path.read_text(encoding="ascii").strip()


def load_pepper(
    *, redis_url: str | None, pepper: str | None, data_dir: Path, pepper_file: Path | None = None
) -> bytes:
    """Load the secret that keys caller ids.

    An explicit ``pepper`` (``RAPPORT_PEPPER``) always wins; an empty or blank one counts as
    unset. With an external Redis (``redis_url``) the pepper must be explicit, because every
    process sharing that Redis must use the same one. With the embedded Redis the pepper is read
    from ``pepper_file`` (``RAPPORT_PEPPER_FILE``, default :func:`default_pepper_file`), which
    is generated on first use (64 hex characters, mode 0600). A pepper in the data folder, where
    earlier versions generated it, is moved there first, so every stored key still resolves.
    Its text is the pepper, so ``RAPPORT_PEPPER=$(cat <pepper file>)`` keeps the same keys when
    moving to an external Redis. Losing that file orphans every stored memory.

    Args:
        redis_url: ``REDIS_URL``, or None for the embedded Redis.
        pepper: ``RAPPORT_PEPPER``, or None.
        data_dir: The embedded Redis data directory (an old-layout pepper is moved out of it).
        pepper_file: Where the generated pepper lives (None: :func:`default_pepper_file`).

    Returns:
        The pepper as bytes.

    Raises:
        ConfigurationError: The pepper is shorter than ``MIN_PEPPER_CHARS``, ``redis_url`` is set
            without a pepper, the pepper file is unreadable or too short, or the data folder
            holds a different pepper than the pepper file.

    """
    if pepper is not None and pepper.strip():
        if len(pepper) < MIN_PEPPER_CHARS:
            raise ConfigurationError(
                f"RAPPORT_PEPPER must be at least {MIN_PEPPER_CHARS} characters long"
            )
        if pepper != pepper.strip() or not pepper.isprintable():
            # A stray line end or quote from a .env would key callers apart between processes.
            raise ConfigurationError(
                "RAPPORT_PEPPER is malformed: it has control characters or surrounding spaces"
            )
        return pepper.encode()
    if redis_url:
        raise ConfigurationError(
            "REDIS_URL is set but RAPPORT_PEPPER is not: set RAPPORT_PEPPER to a secret of at "
            f"least {MIN_PEPPER_CHARS} characters, shared by every process using that Redis"
        )
    path = (pepper_file or default_pepper_file()).expanduser()
    try:
        _move_old_pepper(data_dir / PEPPER_FILENAME, path)
        stored = generated_secret(path)
    except OSError as err:
        raise ConfigurationError(
            f"RAPPORT_PEPPER_FILE ({path}) cannot be read or written ({err.strerror})"
        ) from None
    except UnicodeDecodeError:
        raise ConfigurationError(
            f"RAPPORT_PEPPER_FILE ({path}) is not a pepper; restore it from backup"
        ) from None
    if len(stored) < MIN_PEPPER_CHARS:
        raise ConfigurationError(
            f"RAPPORT_PEPPER_FILE ({path}) is too short; restore it from backup"
        )
    _warn_generated_pepper(path)
    return stored.encode()


@functools.cache
def _warn_generated_pepper(path: Path) -> None:
    # Once per process: the start-up check and the memory it then opens both load the pepper.
    logger.warning(
        "Caller keys use the generated pepper file (RAPPORT_PEPPER_FILE): back it up apart from "
        "the data (losing it orphans every stored memory) or set RAPPORT_PEPPER"
    )


def _move_old_pepper(old: Path, path: Path) -> None:
    """Move a pepper out of the data folder (the old layout) to ``path``, keeping its text."""
    if old.resolve() == path.resolve():
        return
    try:
        text = old.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return  # the usual case; or another process moved it just now
    if path.exists():
        if path.read_text(encoding="ascii").strip() != text:
            raise ConfigurationError(
                f"the data folder holds a pepper that differs from {path}: keep the one the "
                "stored memory was keyed with and remove the other"
            )
    else:
        _write_secret_file(path, text)
    old.unlink(missing_ok=True)
    logger.info("Moved the generated pepper out of the data folder (RAPPORT_PEPPER_FILE)")


def _write_secret_file(path: Path, text: str) -> None:
    """Create a secret's file atomically; if another process won the race, keep theirs."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        # link() fails if the target exists, unlike replace(): two processes starting at once
        # must end up with one secret, never overwrite each other's.
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink(missing_ok=True)
