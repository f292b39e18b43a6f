"""Per-process shared clients, built from settings on first use (the composition root)."""

from __future__ import annotations

from functools import lru_cache

from redis import Redis

from cardpipe.credentials import CredentialStore
from cardpipe.db import get_sessionmaker
from cardpipe.settings import get_settings
from wechat.http import WeChatHttp


@lru_cache(maxsize=1)
def redis_client() -> Redis:
    return Redis.from_url(get_settings().redis_url, health_check_interval=30)


@lru_cache(maxsize=1)
def wechat_http() -> WeChatHttp:
    return WeChatHttp.from_settings()


@lru_cache(maxsize=1)
def credential_store() -> CredentialStore:
    return CredentialStore(redis_client(), get_sessionmaker(), wechat_http())


def reset() -> None:
    """Forget every shared client (tests that change settings between cases)."""
    for factory in (credential_store, wechat_http, redis_client):
        factory.cache_clear()
