"""How the HTTP layer answers while Redis or PostgreSQL is away.

* Anything that needed the unreachable service and has no other way to answer gets
  ``503 Service Unavailable`` with ``Retry-After`` (never a 500): the caller's retry will do.
* Endpoints that can answer without Redis do so (a poll is rebuilt from PostgreSQL, a result or
  a push is stored with its outbox intent, sent by the relay when Redis is back).
* A WeChat push rides out a short PostgreSQL restart inside its request
  (:func:`ride_out_database_restart`): WeChat waits 5 s for an answer and gives up after three
  tries, so a push answered 503 during a restart might never come again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, OperationalError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds the client is told to wait before retrying.
RETRY_AFTER_S = "2"
#: A push retries its database write this long (WeChat's own timeout is 5 s).
PUSH_DB_PATIENCE_S = 4.0
_RETRY_PAUSE_S = 0.25


def database_unreachable(exc: BaseException) -> bool:
    """A failure to talk to the database (connection refused or lost), not a bad statement."""
    return isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


def unavailable(service: str) -> JSONResponse:
    return JSONResponse(
        {"detail": f"{service} is unavailable; retry shortly"},
        status_code=503,
        headers={"Retry-After": RETRY_AFTER_S},
    )


def ride_out_database_restart(write: Callable[[], T], *, patience_s: float = PUSH_DB_PATIENCE_S) -> T:
    """``write()``, tried again while the database is unreachable, for up to ``patience_s``."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return write()
        except DBAPIError as exc:
            if not database_unreachable(exc) or time.monotonic() >= deadline:
                raise
            log.warning("database unreachable (%s); trying again", type(exc.orig).__name__)
            time.sleep(_RETRY_PAUSE_S)


def install(app: FastAPI) -> None:
    """503 + Retry-After for a request that failed because Redis or PostgreSQL is away."""

    async def redis_away(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: Redis unavailable: %s", request.method, request.url.path, exc)
        return unavailable("Redis")

    async def database_away(request: Request, exc: Exception) -> JSONResponse:
        if not database_unreachable(exc):
            raise exc
        log.warning("%s %s: database unavailable: %s", request.method, request.url.path, type(exc).__name__)
        return unavailable("the database")

    app.add_exception_handler(RedisConnectionError, redis_away)
    app.add_exception_handler(RedisTimeoutError, redis_away)
    app.add_exception_handler(DBAPIError, database_away)
