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
    #: PostgreSQL connections of one process: ``pool`` kept open, up to ``overflow`` more at
    #: peaks. Unset, both follow the process's own concurrency (``process_threads``, which
    #: ``cardpipe worker`` and ``cardpipe api`` set from ``--threads``): one per thread kept, two
    #: more per thread at peaks (a credential refresh inside a transaction). Without it, 10 and 20.
    db_pool_size: int | None = Field(default=None, ge=1)
    db_max_overflow: int | None = Field(default=None, ge=0)
    #: Seconds a request waits for a free pooled connection before failing.
    db_pool_timeout_s: float = 30.0
    #: PostgreSQL is reached through a transaction-mode pooler (PgBouncer ``pool_mode =
    #: transaction``): no server-side prepared statements (a later transaction may run on
    #: another server connection).
    db_transaction_pooler: bool = False
    #: Threads of this process that may each use the database at once (set by the commands).
    process_threads: int | None = Field(default=None, ge=1)
    #: Threads of an api process for blocking calls (set by ``cardpipe api --threads``; unset,
    #: anyio's default of 40).
    api_threads: int | None = Field(default=None, ge=1)
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
    #: A reader finding less than this left asks the (locked, re-checking) writer to refresh.
    credential_reader_min_validity_s: float = 60.0
    #: WeChat calls per second per official account, shared by every process. WeChat publishes no
    #: per-second limit for the card API: tune it from ``get_api_quota`` and observed 45011s.
    wechat_calls_per_s: int = 100
    #: How long a caller waits (holding its worker thread) for a free slot of that limit before
    #: its message is deferred instead.
    wechat_rate_wait_s: float = 1.0
    #: While an account is blocked by 45009, one call is let through this often to see whether
    #: the quota is back (the block ends at the next Beijing midnight at the latest).
    quota_probe_interval_s: float = 300.0
    #: Tickets per re-sign chunk message after an api_ticket rotation.
    resign_chunk_tickets: int = 5_000
    #: The scheduler leads while it holds a Redis lease of this length, renewed every
    #: ``scheduler_renew_s``; a leader that cannot reach Redis keeps trying, one whose lease was
    #: taken steps down to standby.
    scheduler_lease_s: float = 30.0
    scheduler_renew_s: float = 10.0
    #: How often the scheduler asks for due credential refreshes, stale re-signs and reconciles.
    scheduler_refresh_every_s: float = 60.0
    scheduler_resign_every_s: float = 60.0
    scheduler_reconcile_every_s: float = 60.0
    #: A ticket claimed by the client but not confirmed by WeChat this long is checked with
    #: ``code/get``; older than ``claim_confirm_max_age_s`` it is left to ops.
    claim_confirm_delay_s: float = 600.0
    #: A successful client result whose tickets WeChat's ``user_get_card`` has not confirmed yet
    #: waits this long once for the push (which makes its ``code/decrypt`` calls unnecessary).
    #: WeChat pushes within moments, but at a launch's peak the push waits its turn in the api
    #: and the drain too: a result handed on before it arrives costs a message, a transaction and
    #: usually nothing else (the push has landed by then), or a ``code/decrypt`` call of the quota.
    claim_push_grace_ms: int = 2000
    claim_confirm_max_age_s: float = 86_400.0
    #: A pre-issuing event started this long ago whose orders still lack tickets is re-enqueued.
    preissue_stuck_after_s: float = 300.0
    #: A push whose ``timestamp`` is further than this from now is refused; its (timestamp,
    #: nonce) pair is remembered this long (a replay with another body is refused).
    push_max_age_s: float = 300.0
    #: Logins (``POST /v1/sessions``, one jscode2session call each) allowed per client address
    #: and per mini program in each window, across every api process. Behind a proxy the address
    #: is the forwarded one (uvicorn's ``--forwarded-allow-ips``); mobile carriers put many users
    #: behind one address, so keep the per-client limit well above one person's retries.
    login_limit_per_client: int = 30
    login_limit_per_appid: int = 6000
    login_limit_window_s: int = 60
    #: Lifetime of a Mini Program session token.
    session_ttl_s: int = 7200
    #: Largest request body accepted from WeChat or a client, in bytes.
    max_body_bytes: int = 64 * 1024
    #: Largest order file accepted by the admin import endpoint (streamed to disk, not memory).
    max_import_bytes: int = 1024 * 1024 * 1024
    #: A worker process silent this long is presumed dead and its unacked messages requeued.
    broker_heartbeat_timeout_ms: int = 15_000
    #: Chance (per million broker commands) of running that dead-worker requeue check.
    broker_maintenance_chance: int = 50_000
    #: Worker processes also export dramatiq's own Prometheus metrics (``dramatiq_prom_port``,
    #: 9191) for the monitoring stack; cardpipe's /metrics on the api does not need it.
    worker_metrics: bool = False
    #: Tickets per pre-issue chunk message (whole orders; a chunk may exceed it by one order).
    preissue_chunk_tickets: int = 2_000

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
