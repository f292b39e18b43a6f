"""The claim poll, ``GET /v1/orders/{order_no}/claim``: the launch-day hot path.

The common case is one Redis round trip (the pre-serialized answer and the OA's current card
ticket version, one ``MGET``), an in-process check of the session token, and the bytes out: no
database, no write. A missing record, or one signed by an older card ticket than the current one,
is rebuilt from the database in a worker thread (re-signing first), so a stale signature is
never handed out. With Redis away every poll is rebuilt from the database (and not cached); a
poll that needs what only Redis has answers 503 with ``Retry-After``, never 500.

Profiling showed FastAPI's routing and dependency resolution costing more than the poll's own
work (the same poll as a FastAPI route with its dependencies made about a third of the requests
per second on the 2-core benchmark machine), so :class:`ClaimPollFastPath`, a small ASGI layer
in front of the app, answers the poll itself. The FastAPI route of the same path
(``cardpipe.routes.miniprogram``) stays: it documents the endpoint in the OpenAPI schema and answers
what this layer declines (an order number that is not one, for FastAPI's 422). Both go through
:func:`poll_answer`. What the claims are (cached or rebuilt) is ``cardpipe.services.claim_answers``;
this module is the HTTP around it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError
from starlette.types import ASGIApp, Receive, Scope, Send

from cardpipe.runtime import async_redis_client
from cardpipe.services import claim_answers, claim_ownership, claim_payload, miniprogram_sessions
from cardpipe.services.claim_cache import CachedClaim
from cardpipe.services.claim_payload import ClaimStatus
from cardpipe.services.miniprogram_sessions import InvalidSession, MpSession
from cardpipe.services.poll_tally import PollTally
from wechat.errors import WeChatError
from workers.outbox import flush
from workers.preissue import issue_orders

#: An order number as the path carries it: printable ASCII but ``/``, at most 64 characters.
ORDER_NO_PATTERN = r"^[!-.0-~]{1,64}$"
POLL_PATH = re.compile(r"^/v1/orders/([!-.0-~]{1,64})/claim$")
RETRY_AFTER_S = str(max(1, claim_payload.RETRY_AFTER_MS // 1000))
#: This process's poll count, for ``/metrics``.
POLLS = PollTally()


@dataclass(frozen=True, slots=True)
class PollAnswer:
    status: int
    headers: dict[str, str]
    body: bytes = b""


def _error(status: int, detail: str, **headers: str) -> PollAnswer:
    body = json.dumps({"detail": detail}).encode("utf-8")
    return PollAnswer(status, {"content-type": "application/json", **headers}, body)


def bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def request_issue(to_issue: list[tuple[int, int]]) -> None:
    """Queue the just-in-time issue of orders that were not pre-issued (``workers.preissue.issue_orders``)."""
    claim_answers.request_issue(to_issue, issue_actor=issue_orders.actor_name, send=flush)


async def current_claims(session: MpSession, order_nos: list[str]) -> dict[str, CachedClaim]:
    """The claims of the caller's orders (:func:`claim_answers.current_claims`), with the
    just-in-time issue queued through this process's outbox flush."""
    return await claim_answers.current_claims(session, order_nos, issue_actor=issue_orders.actor_name, send=flush)


def current_claims_blocking(session: MpSession, order_nos: list[str]) -> dict[str, CachedClaim]:
    """:func:`current_claims` in a worker thread (:func:`claim_answers.current_claims_blocking`)."""
    return claim_answers.current_claims_blocking(session, order_nos, issue_actor=issue_orders.actor_name, send=flush)


def _not_modified(if_none_match: str, etag: str) -> bool:
    return if_none_match.strip() == "*" or etag in (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))


async def poll_answer(authorization: str | None, order_no: str, if_none_match: str | None) -> PollAnswer:
    await POLLS.count(async_redis_client())
    token = bearer_token(authorization)
    if token is None:
        return _error(401, "session token required (Authorization: Bearer …)", **{"www-authenticate": "Bearer"})
    try:
        session = miniprogram_sessions.verify_token(token)
    except InvalidSession as exc:
        return _error(401, str(exc), **{"www-authenticate": "Bearer"})
    try:
        claim = (await current_claims(session, [order_no]))[order_no]
    except claim_ownership.UnknownOrders:
        return _error(404, "no such order")
    except WeChatError as exc:
        detail = f"WeChat did not answer usefully (errcode {exc.errcode}); retry shortly"
        return _error(503, detail, **{"retry-after": RETRY_AFTER_S})
    except (RedisError, OperationalError) as exc:
        service = "Redis" if isinstance(exc, RedisError) else "the database"
        return _error(503, f"{service} is unavailable; retry shortly", **{"retry-after": RETRY_AFTER_S})
    # The payload holds ticket codes: never stored by a cache (the client revalidates by ETag).
    headers = {"etag": claim.etag, "cache-control": "no-store"}
    if claim.status == ClaimStatus.PENDING:
        headers["retry-after"] = RETRY_AFTER_S
    if if_none_match and _not_modified(if_none_match, claim.etag):
        return PollAnswer(304, headers)
    return PollAnswer(200, {"content-type": "application/json", **headers}, claim.body)


class ClaimPollFastPath:
    """Pure ASGI: answers ``GET /v1/orders/{order_no}/claim`` without FastAPI's routing and
    dependency machinery; everything else goes to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = POLL_PATH.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "GET" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        authorization = if_none_match = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"if-none-match":
                if_none_match = value.decode("latin-1")
        answer = await poll_answer(authorization, match.group(1), if_none_match)
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items()]
        if answer.status != 304:
            headers.append((b"content-length", str(len(answer.body)).encode("ascii")))
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})
