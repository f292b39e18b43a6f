"""Configuration from environment variables.

``DATABASE_URL`` and ``REDIS_URL`` are read without prefix (as docker-compose and the demo set
them); everything else is ``CARDPIPE_*``. The defaults are the embedded single-machine setup: a
SQLite file under the data directory and a local Redis.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CARDPIPE_", extra="ignore")

    data_dir: Path = Path(".cardpipe")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "CARDPIPE_DATABASE_URL")
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", validation_alias=AliasChoices("REDIS_URL", "CARDPIPE_REDIS_URL")
    )
    wechat_api_base: str = "https://api.weixin.qq.com"
    #: Seconds before a WeChat call gives up (WeChat itself answers well inside this).
    wechat_timeout_s: float = 5.0
    #: Retries of errcode -1 (system busy) inside one client call, with exponential backoff.
    wechat_busy_retries: int = 3
    wechat_busy_backoff_s: float = 0.5
    #: Bearer tokens accepted on admin endpoints; comma-separated in the environment.
    admin_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    #: Bearer tokens accepted from gate staff on the redemption endpoint.
    gate_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    #: Fernet keys that encrypt secrets at rest; the first encrypts, all decrypt (key rotation).
    #: Unset: a key file is created in the data directory on first use.
    secret_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    #: Refresh access_token and api_ticket this many seconds before they expire.
    credential_refresh_margin_s: int = 900
    #: Lifetime of a Mini Program session token.
    session_ttl_s: int = 7200
    #: Largest request body accepted from WeChat or a client, in bytes.
    max_body_bytes: int = 64 * 1024

    @field_validator("admin_tokens", "gate_tokens", "secret_keys", mode="before")
    @classmethod
    def _split_comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'cardpipe.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
