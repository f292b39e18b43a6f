"""Per-process shared clients, built from settings on first use (the composition root)."""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import Any
from weakref import WeakKeyDictionary

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from cardpipe import rotation
from cardpipe.credentials import CredentialStore
from cardpipe.db import get_sessionmaker
from cardpipe.settings import get_settings
from wechat.http import WeChatHttp

#: Every Redis client of the process: a dead pooled connection (Redis restarted) is found by the
#: health check or the first failed command and replaced, with a couple of quick retries, so a
#: request after Redis came back does not fail on a connection from before; a Redis that is away
#: fails fast (a 503 or a deferred message), instead of hanging the caller.
REDIS_CLIENT_OPTIONS: dict[str, Any] = {
    "health_check_interval": 5,
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    "retry_on_error": [RedisConnectionError, RedisTimeoutError],
}
REDIS_RETRIES = 2


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=0.2, base=0.02), REDIS_RETRIES)


def _async_retry() -> AsyncRetry:
    return AsyncRetry(ExponentialBackoff(cap=0.2, base=0.02), REDIS_RETRIES)


@lru_cache(maxsize=1)
def redis_client() -> Redis:
    return Redis.from_url(get_settings().redis_url, retry=_retry(), **REDIS_CLIENT_OPTIONS)


_async_redis_clients: WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncRedis] = WeakKeyDictionary()


def async_redis_client() -> AsyncRedis:
    """The asyncio Redis client of the running event loop (its connections belong to that loop;
    a test server in a thread has its own loop)."""
    loop = asyncio.get_running_loop()
    client = _async_redis_clients.get(loop)
    if client is None:
        client = _async_redis_clients[loop] = AsyncRedis.from_url(
            get_settings().redis_url, retry=_async_retry(), **REDIS_CLIENT_OPTIONS
        )
    return client


@lru_cache(maxsize=1)
def wechat_http() -> WeChatHttp:
    settings = get_settings()
    return WeChatHttp(
        settings.wechat_api_base,
        timeout_s=settings.wechat_timeout_s,
        busy_retries=settings.wechat_busy_retries,
        busy_backoff_s=settings.wechat_busy_backoff_s,
    )


@lru_cache(maxsize=1)
def credential_store() -> CredentialStore:
    """The process's credential store; a rotation notifies the listeners of :mod:`cardpipe.rotation`."""
    return CredentialStore(
        redis_client(), get_sessionmaker(), wechat_http(), on_ticket_rotated=rotation.notify_ticket_rotated
    )


def reset() -> None:
    """Forget every shared client (tests that change settings between cases)."""
    for factory in (credential_store, wechat_http, redis_client):
        factory.cache_clear()
    _async_redis_clients.clear()
