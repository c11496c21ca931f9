"""Memory settings, read from the environment (which a process entry fills in from ``.env``).

``MemorySettings`` is shared by the bot, the analysis worker and the CLI, so all three find the
same Redis, the same pepper and the same retention. The worker's own settings are
:class:`memory.analysis.settings.AnalysisSettings`.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from memory.backend.connect import URL_SCHEMES
from memory.errors import ConfigurationError
from memory.models import MAX_TEXT_CHARS
from memory.privacy.erasure import DEFAULT_ERASURE_REWRITE_S
from memory.store.callers import (
    DEFAULT_MAX_FACTS,
    DEFAULT_MAX_VALUE_BYTES,
    DEFAULT_TOMBSTONE_SECONDS,
)

#: Where the README explains every variable.
README_KEYS = "README.md#configuration"

#: The worker blocks on the stream for a second at a time; the call path's tight Redis
#: timeouts would cut every such read short.
WORKER_COMMAND_TIMEOUT = 5.0


class MemorySettings(BaseSettings):
    """Where memory lives and how long it is kept."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    redis_url: str | None = Field(default=None, alias="REDIS_URL")
    pepper: str | None = Field(default=None, alias="RAPPORT_PEPPER", repr=False)
    data_dir: Path = Field(default=Path("data"), alias="RAPPORT_DATA_DIR")
    key_prefix: str = Field(default="rapport", alias="RAPPORT_KEY_PREFIX")
    default_region: str = Field(default="US", alias="RAPPORT_DEFAULT_REGION")
    retention_days: int = Field(default=90, ge=0, alias="RAPPORT_MEMORY_RETENTION_DAYS")
    recent_exchanges: int = Field(default=10, ge=0, le=100, alias="RAPPORT_RECENT_EXCHANGES")
    #: Call-path timeouts are tight: a slow Redis degrades a call to "no memory", not silence.
    redis_connect_timeout: float = Field(default=0.5, gt=0, alias="RAPPORT_REDIS_CONNECT_TIMEOUT")
    redis_command_timeout: float = Field(default=0.25, gt=0, alias="RAPPORT_REDIS_COMMAND_TIMEOUT")
    #: Facts kept per caller (0 = no cap); over it the lowest-value facts are evicted.
    max_facts: int = Field(default=DEFAULT_MAX_FACTS, ge=0, alias="RAPPORT_MEMORY_MAX_FACTS")
    #: Longest turn, fact or name text stored, in characters; longer text is cut first.
    max_text_chars: int = Field(
        default=MAX_TEXT_CHARS, ge=80, alias="RAPPORT_MEMORY_MAX_TEXT_CHARS"
    )
    #: Largest key-value memory value, in JSON bytes.
    max_value_bytes: int = Field(
        default=DEFAULT_MAX_VALUE_BYTES, ge=64, alias="RAPPORT_MEMORY_MAX_VALUE_BYTES"
    )
    #: How long a forget refuses the writes of calls that began before it.
    tombstone_hours: float = Field(
        default=DEFAULT_TOMBSTONE_SECONDS / 3600, gt=0, alias="RAPPORT_FORGET_TOMBSTONE_HOURS"
    )
    #: Longest time erased data may stay in Redis's append-only file after a forget: one
    #: ``BGREWRITEAOF`` within it covers every forget since the last rewrite.
    erasure_rewrite_s: float = Field(
        default=DEFAULT_ERASURE_REWRITE_S, gt=0, alias="RAPPORT_ERASURE_REWRITE_S"
    )
    #: The generated pepper's file (used without ``RAPPORT_PEPPER``); default: a per-user
    #: config path outside the data folder (see ``memory.privacy.identity.default_pepper_file``).
    pepper_file: Path | None = Field(default=None, alias="RAPPORT_PEPPER_FILE")
    #: Keep each remembered caller's number, sealed, so the business can call them back
    #: (off: no number is kept and nobody can be called back).
    callback_numbers: bool = Field(default=True, alias="RAPPORT_CALLBACK_NUMBERS")
    #: The key file that seals callers' numbers (default: beside the generated pepper, outside
    #: the data folder; see ``memory.privacy.numbers``).
    number_key_file: Path | None = Field(default=None, alias="RAPPORT_NUMBER_KEY_FILE")
    #: The price table calls are costed by (default: the list prices in ``memory/prices.json``).
    prices_file: Path | None = Field(default=None, alias="RAPPORT_PRICES_FILE")
    #: The call history's database: unset for SQLite in the data folder, ``postgresql://…`` for
    #: Postgres, ``none`` for no history (see ``memory.history.store.history_database_url``).
    history_url: str | None = Field(default=None, alias="RAPPORT_HISTORY_URL", repr=False)
    #: Calls older than this many days leave the history (0: kept until forgotten).
    history_retention_days: int = Field(default=0, ge=0, alias="RAPPORT_HISTORY_RETENTION_DAYS")
    #: Bearer token ``GET /metrics`` requires when set (the metrics name no caller).
    metrics_token: SecretStr | None = Field(default=None, alias="RAPPORT_METRICS_TOKEN", repr=False)
    #: ``GET /health`` fails when no analysis worker has reported in for this long.
    worker_heartbeat_max_age: float = Field(
        default=30.0, gt=0, alias="RAPPORT_WORKER_HEARTBEAT_MAX_AGE"
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is None or not url.strip():
            return None  # blank: the embedded Redis
        scheme, separator, _ = url.strip().partition("://")
        if not separator or scheme not in URL_SCHEMES:
            schemes = ", ".join(f"{name}://" for name in URL_SCHEMES)
            raise ValueError(f"must start with one of {schemes}")
        return url.strip()

    def check_data_dir(self) -> None:
        """Make sure the embedded Redis can keep its data in ``data_dir`` (created if missing).

        Checked once at start-up; nothing to check with ``REDIS_URL``. A folder that breaks
        later is the bot's to retry, not a setting's.

        Raises:
            ConfigurationError: One line naming ``RAPPORT_DATA_DIR``, the folder and the reason.
        """
        if self.redis_url:
            return
        folder = self.data_dir.expanduser().absolute()
        blocker = next((path for path in (folder, *folder.parents) if path.exists()), None)
        if blocker is not None and not blocker.is_dir():
            where = "is a file" if blocker == folder else f"is under a file ({blocker})"
            raise ConfigurationError(
                f"RAPPORT_DATA_DIR ({folder}) {where}: give a folder Rapport can write"
            )
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as e:
            raise ConfigurationError(
                f"RAPPORT_DATA_DIR ({folder}) cannot be created or written ({e.strerror})"
            ) from None

    def for_worker(self) -> MemorySettings:
        """These settings as the analysis worker uses them, for the bot and the CLI alike.

        Its blocking queue reads need a longer command timeout than the call path's: at least
        ``WORKER_COMMAND_TIMEOUT``.
        """
        timeout = max(self.redis_command_timeout, WORKER_COMMAND_TIMEOUT)
        return self.model_copy(update={"redis_command_timeout": timeout})


_UNPARSED_FIELD = re.compile(r'field "(\w+)"')


def invalid_settings(error: ValidationError | SettingsError) -> ConfigurationError:
    """A settings class's refusal as one line naming each variable (its env alias) and why.

    Args:
        error: What building a settings class raised: a value that failed validation, or one
            that is not even parsable (``SettingsError``: JSON settings).
    """
    if isinstance(error, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'settings'}: {problem['msg']}"
            for problem in error.errors()
        )
        return ConfigurationError(f"Invalid settings ({problems}); see {README_KEYS}")
    field = _UNPARSED_FIELD.search(str(error))
    aliases = {
        name: info.alias
        for settings in _settings_classes(BaseSettings)
        for name, info in settings.model_fields.items()
        if info.alias
    }
    variable = aliases.get(field[1], "a setting") if field else "a setting"
    return ConfigurationError(f"{variable} cannot be parsed; see {README_KEYS}")


def _settings_classes(base: type[BaseSettings]) -> list[type[BaseSettings]]:
    """Every settings class loaded in this process (Rapport's are all ``BaseSettings``)."""
    found = []
    for subclass in base.__subclasses__():
        found += [subclass, *_settings_classes(subclass)]
    return found
