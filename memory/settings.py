"""Memory and analysis settings, read from the environment and ``.env``.

``MemorySettings`` is shared by the bot, the analysis worker and the CLI, so all three find the
same Redis, the same pepper and the same retention. ``AnalysisSettings`` configures the
post-call analysis worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from memory.errors import ConfigurationError
from memory.fields import AnalysisFields, load_fields
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


def _default_actions() -> list[str]:
    # Imported here: memory.analysis pulls in the Anthropic SDK, slow to import for the bot.
    from memory.analysis import DEFAULT_ACTIONS

    return list(DEFAULT_ACTIONS)


def _comma_separated(value: object) -> object:
    # ``RAPPORT_ANALYSIS_ACTIONS=call_back,send_quote`` reads better in a .env than JSON does.
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _blank_is_none(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


class AnalysisSettings(BaseSettings):
    """How calls are analysed after they end: the LLM, the retries, the queue and the webhook.

    Times are in seconds. Defaults suit production; tests shorten the timeouts and backoffs.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    api_key: SecretStr | None = Field(default=None, alias="ANTHROPIC_API_KEY")
    base_url: str | None = Field(default=None, alias="ANTHROPIC_BASE_URL")
    model: str = Field(default="claude-haiku-4-5", alias="RAPPORT_ANALYSIS_MODEL")
    actions: Annotated[list[str], NoDecode, BeforeValidator(_comma_separated)] = Field(
        default_factory=_default_actions, min_length=1, alias="RAPPORT_ANALYSIS_ACTIONS"
    )
    #: The business's own analysis fields, a YAML or JSON file (see ``memory.fields``).
    fields_file: Annotated[Path | None, BeforeValidator(_blank_is_none)] = Field(
        default=None, alias="RAPPORT_ANALYSIS_FIELDS"
    )
    #: Who the agent answers for, named in the analysis prompt ("Bella's Bakery, Barcelona").
    business_name: str | None = Field(default=None, alias="RAPPORT_BUSINESS_NAME")
    request_timeout: float = Field(default=30.0, gt=0, alias="RAPPORT_ANALYSIS_TIMEOUT")
    #: Retries of an LLM that could not answer (timeout, 429, 5xx, 529) before dead-lettering.
    max_retries: int = Field(default=5, ge=0, le=20, alias="RAPPORT_ANALYSIS_MAX_RETRIES")
    #: Retries of an LLM that answered with an invalid analysis before dead-lettering.
    max_invalid_retries: int = Field(
        default=2, ge=0, le=10, alias="RAPPORT_ANALYSIS_MAX_INVALID_RETRIES"
    )
    backoff_base: float = Field(default=1.0, gt=0, alias="RAPPORT_ANALYSIS_BACKOFF")
    #: Longest wait between two attempts, a server's ``retry-after`` included.
    backoff_max: float = Field(default=60.0, gt=0, alias="RAPPORT_ANALYSIS_BACKOFF_MAX")
    #: A job whose worker stopped renewing it for this long is claimed by another worker.
    claim_timeout: float = Field(default=60.0, gt=0, alias="RAPPORT_ANALYSIS_CLAIM_TIMEOUT")
    #: Deliveries of one job (crashed workers) before it goes to the dead-letter stream.
    max_deliveries: int = Field(default=5, ge=1, le=100, alias="RAPPORT_ANALYSIS_MAX_DELIVERIES")
    #: A call with turns but no end, silent this long, is taken as ended (its bot died).
    idle_timeout: float = Field(default=600.0, gt=0, alias="RAPPORT_ANALYSIS_IDLE_TIMEOUT")
    #: How often one of the workers looks for abandoned calls and stranded hang-ups.
    sweep_interval: float = Field(default=30.0, gt=0, alias="RAPPORT_ANALYSIS_SWEEP_INTERVAL")
    #: Jobs one worker process analyses at once.
    concurrency: int = Field(default=4, ge=1, le=256, alias="RAPPORT_ANALYSIS_CONCURRENCY")
    #: Seconds a stopping worker lets its jobs finish before leaving them to another worker.
    stop_grace: float = Field(default=10.0, ge=0, alias="RAPPORT_ANALYSIS_STOP_GRACE")
    #: Upper bound of the analysis stream (approximate); it must exceed the largest backlog.
    queue_maxlen: int = Field(default=100_000, ge=1000, alias="RAPPORT_ANALYSIS_QUEUE_MAXLEN")
    webhook_url: str | None = Field(default=None, alias="RAPPORT_ANALYSIS_WEBHOOK_URL")
    webhook_secret: SecretStr | None = Field(
        default=None, alias="RAPPORT_ANALYSIS_WEBHOOK_SECRET", repr=False
    )
    webhook_timeout: float = Field(default=10.0, gt=0, alias="RAPPORT_ANALYSIS_WEBHOOK_TIMEOUT")
    webhook_retries: int = Field(default=5, ge=0, le=20, alias="RAPPORT_ANALYSIS_WEBHOOK_RETRIES")

    def require_api_key(self) -> str:
        """The Anthropic API key.

        Raises:
            ConfigurationError: ``ANTHROPIC_API_KEY`` is unset or blank.

        """
        key = self.api_key.get_secret_value().strip() if self.api_key else ""
        if not key:
            raise ConfigurationError(
                "ANTHROPIC_API_KEY is not set: the analysis worker needs an Anthropic API key"
            )
        return key

    def analysis_fields(self) -> AnalysisFields:
        """The business's own analysis fields (none when ``RAPPORT_ANALYSIS_FIELDS`` is unset).

        Raises:
            ConfigurationError: One line naming what is wrong with the fields file.

        """
        return load_fields(self.fields_file)

    def webhook_signing_secret(self) -> str | None:
        """The webhook secret, or None when no webhook is configured.

        Raises:
            ConfigurationError: ``RAPPORT_ANALYSIS_WEBHOOK_URL`` is set without a secret: an
                unsigned webhook could be forged by anyone who learns its address.

        """
        if not self.webhook_url:
            return None
        secret = self.webhook_secret.get_secret_value() if self.webhook_secret else ""
        if not secret:
            raise ConfigurationError(
                "RAPPORT_ANALYSIS_WEBHOOK_SECRET is not set: the analysis webhook must be signed"
            )
        return secret
