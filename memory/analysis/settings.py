"""How calls are analysed after they end: the analysis worker's settings.

Read from the environment like :class:`memory.settings.MemorySettings`, which
the worker uses beside these to reach the same Redis with the same pepper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from memory.analysis.fields import AnalysisFields, load_fields
from memory.analysis.prompts import DEFAULT_ACTIONS
from memory.errors import ConfigurationError


def _default_actions() -> list[str]:
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

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    api_key: SecretStr | None = Field(default=None, alias="ANTHROPIC_API_KEY")
    base_url: str | None = Field(default=None, alias="ANTHROPIC_BASE_URL")
    model: str = Field(default="claude-haiku-4-5", alias="RAPPORT_ANALYSIS_MODEL")
    actions: Annotated[list[str], NoDecode, BeforeValidator(_comma_separated)] = Field(
        default_factory=_default_actions, min_length=1, alias="RAPPORT_ANALYSIS_ACTIONS"
    )
    #: The business's own analysis fields, a YAML or JSON file (see ``memory.analysis.fields``).
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
