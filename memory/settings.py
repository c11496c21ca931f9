"""Memory settings, read from the environment and ``.env``.

Shared by the bot, the analysis worker and the CLI, so all three find the same Redis, the same
pepper and the same retention.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    redis_retries: int = Field(default=2, ge=0, le=10, alias="RAPPORT_REDIS_RETRIES")
