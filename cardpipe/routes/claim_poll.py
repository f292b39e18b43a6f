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
:func:`poll_answer`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from fastapi.concurrency import run_in_threadpool
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError
from starlette.types import ASGIApp, Receive, Scope, Send

from cardpipe.credentials import StoredCredential
from cardpipe.db import session_scope
from cardpipe.runtime import async_redis_client, credential_store, redis_client
from cardpipe.services import claim_cache, claims, miniprogram_sessions, outbox
from cardpipe.services.claim_cache import CachedClaim
from cardpipe.services.claims import ClaimStatus, OrderRef
from cardpipe.services.miniprogram_sessions import InvalidSession, MpSession
from cardpipe.services.poll_tally import PollTally
from wechat.errors import WeChatError
from workers.outbox import flush
from workers.preissue import issue_orders

#: An order number as the path carries it: printable ASCII but ``/``, at most 64 characters.
ORDER_NO_PATTERN = r"^[!-.0-~]{1,64}$"
POLL_PATH = re.compile(r"^/v1/orders/([!-.0-~]{1,64})/claim$")
RETRY_AFTER_S = str(max(1, claims.RETRY_AFTER_MS // 1000))
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
    """Queue the just-in-time issue of orders that were not pre-issued (pre-issue's idempotent
    ``issue_orders``), through the outbox, at most once per order in ``claim_cache.JIT_RESEND_S``
    (every time while Redis is away: the outbox keeps them until it is back)."""
    wanted = [[event_id, [order_id]] for event_id, order_id in to_issue if _first_issue_request(order_id)]
    if wanted:
        with session_scope() as session:
            intents = outbox.add_many(session, issue_orders.actor_name, wanted)
        flush(intents)


def _first_issue_request(order_id: int) -> bool:
    try:
        return claim_cache.first_issue_request(redis_client(), order_id)
    except RedisError:
        return True


def card_ticket(appid: str) -> StoredCredential:
    """The account's card ticket, from the database while Redis is away (see
    :func:`claims.card_ticket_even_without_redis`)."""
    return claims.card_ticket_even_without_redis(credential_store(), appid)


def rebuild(refs: list[OrderRef]) -> dict[str, CachedClaim]:
    """Build one caller's claims from the database and cache them (order number → claim). Raises
    ``claims.UnknownOrders``, building nothing, if the caller lacks any of the orders. With Redis
    away the claims are built and served, not cached."""
    redis = redis_client()
    try:
        seen: list[bytes] | None = claim_cache.generations(redis, [ref.cache_key for ref in refs])
    except RedisError:
        seen = None
    with session_scope() as session:
        built = claims.build_claims(session, refs, card_ticket=card_ticket)
    to_issue = [order for answer in built.values() for order in answer.to_issue]
    if seen is not None:
        try:
            for ref, generation in zip(refs, seen, strict=True):
                if (answer := built.get(ref.order_no)) is not None:
                    claim_cache.store_if_current(redis, ref.cache_key, answer.claim, generation, answer.ttl_ms)
        except RedisError:
            pass  # served from the database this time
    request_issue(to_issue)
    return {order_no: answer.claim for order_no, answer in built.items()}


async def current_claims(session: MpSession, order_nos: list[str]) -> dict[str, CachedClaim]:
    """The claims of the caller's orders: cached records where they may be served, the rest
    rebuilt (re-signed if stale) in a worker thread. Raises ``claims.UnknownOrders`` if the caller
    lacks one, ``WeChatError`` if a re-sign needed a card ticket WeChat would not give."""
    refs = [OrderRef(session.mp_appid, session.openid, order_no) for order_no in order_nos]
    try:
        cached = await claim_cache.read_many(async_redis_client(), [ref.cache_key for ref in refs], session.oa_appid)
    except RedisError:
        cached = [None] * len(refs)  # Redis away: answer from the database
    answers = {ref.order_no: claim for ref, claim in zip(refs, cached, strict=True) if claim is not None}
    missing = [ref for ref in refs if ref.order_no not in answers]
    if missing:
        answers.update(await run_in_threadpool(rebuild, missing))
    return answers


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
    except claims.UnknownOrders:
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
