"""Memory settings, read from the environment and ``.env``.

``MemorySettings`` is shared by the bot, the analysis worker and the CLI, so all three find the
same Redis, the same pepper and the same retention. The worker's own settings are
:class:`memory.analysis.settings.AnalysisSettings`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from memory.models import MAX_TEXT_CHARS
from memory.privacy.erasure import DEFAULT_ERASURE_REWRITE_S
from memory.store.callers import (
    DEFAULT_MAX_FACTS,
    DEFAULT_MAX_VALUE_BYTES,
    DEFAULT_TOMBSTONE_SECONDS,
)

#: The worker blocks on the stream for a second at a time; the call path's tight Redis
#: timeouts would cut every such read short.
WORKER_COMMAND_TIMEOUT = 5.0


class MemorySettings(BaseSettings):
    """Where memory lives and how long it is kept."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

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
    #: The price table calls are costed by (default: the list prices in ``memory/prices.json``).
    prices_file: Path | None = Field(default=None, alias="RAPPORT_PRICES_FILE")
    #: Bearer token ``GET /metrics`` requires when set (the metrics name no caller).
    metrics_token: SecretStr | None = Field(default=None, alias="RAPPORT_METRICS_TOKEN", repr=False)
    #: ``GET /health`` fails when no analysis worker has reported in for this long.
    worker_heartbeat_max_age: float = Field(
        default=30.0, gt=0, alias="RAPPORT_WORKER_HEARTBEAT_MAX_AGE"
    )

    def for_worker(self) -> MemorySettings:
        """These settings as the analysis worker uses them, for the bot and the CLI alike.

        Its blocking queue reads need a longer command timeout than the call path's: at least
        ``WORKER_COMMAND_TIMEOUT``.
        """
        timeout = max(self.redis_command_timeout, WORKER_COMMAND_TIMEOUT)
        return self.model_copy(update={"redis_command_timeout": timeout})
