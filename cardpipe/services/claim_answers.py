"""The claims a caller's poll is answered with: cached records where they may be served, the rest
rebuilt from the database (re-signed first if an older card ticket signed them) and cached.

A record is stored only if no change invalidated its key since the rebuild began (the key's
generation, ``claim_cache.store_if_current``), so a rebuild never caches an answer older than a
change it raced. With Redis away the claims are built and served from the database, not cached.
Orders that were not pre-issued are queued for just-in-time issue through the outbox: the intents
commit in their own transaction and go to ``send`` (the entry point's flush) right after, at most
once per order in ``claim_cache.JIT_RESEND_S`` (every time while Redis is away).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import replace

from anyio import to_thread
from redis.exceptions import RedisError

from cardpipe.credentials import StoredCredential
from cardpipe.db import get_engine, session_scope
from cardpipe.runtime import async_redis_client, credential_store, redis_client
from cardpipe.services import claim_cache, claim_payload, outbox
from cardpipe.services.claim_cache import CachedClaim
from cardpipe.services.claim_ownership import OrderRef
from cardpipe.services.miniprogram_sessions import MpSession
from cardpipe.services.outbox import Intent

#: Hands committed intents to the broker (the entry point's outbox flush): False if it refused
#: and the intents are left to the relay.
SendIntents = Callable[[Sequence[Intent]], bool]


def request_issue(to_issue: list[tuple[int, int]], *, issue_actor: str, send: SendIntents) -> None:
    """Queue the just-in-time issue of orders that were not pre-issued (pre-issue's idempotent
    ``issue_actor``), through the outbox, at most once per order in ``claim_cache.JIT_RESEND_S``
    (every time while Redis is away: the outbox keeps them until it is back)."""
    wanted = [[event_id, [order_id]] for event_id, order_id in to_issue if _first_issue_request(order_id)]
    if wanted:
        with session_scope() as session:
            intents = outbox.add_many(session, issue_actor, wanted)
        send(intents)


def _first_issue_request(order_id: int) -> bool:
    try:
        return claim_cache.first_issue_request(redis_client(), order_id)
    except RedisError:
        return True


def card_ticket(appid: str, *, cached: bytes | None = None) -> StoredCredential:
    """The account's card ticket, from the database while Redis is away (see
    :func:`claim_payload.card_ticket_even_without_redis`)."""
    return claim_payload.card_ticket_even_without_redis(credential_store(), appid, cached=cached)


def rebuild(
    refs: list[OrderRef], *, issue_actor: str, send: SendIntents, read: claim_cache.Reading | None = None
) -> dict[str, CachedClaim]:
    """Build one caller's claims from the database and cache them (order number → claim). Raises
    ``claim_ownership.UnknownOrders``, building nothing, if the caller lacks any of the orders. With
    Redis away the claims are built and served, not cached. ``read``: what
    :func:`claim_cache.read_for_rebuild` just read, the refs' generations in the refs' order."""
    redis = redis_client()
    seen: list[bytes] | None = None
    if read is not None:
        seen = read.generations
    else:
        with suppress(RedisError):
            seen = claim_cache.generations(redis, [ref.cache_key for ref in refs])

    def ticket_of(appid: str) -> StoredCredential:
        return card_ticket(appid, cached=read.card_ticket if read is not None and appid == read.oa_appid else None)

    with get_engine().begin() as connection:
        built = claim_payload.build_claims(connection, refs, card_ticket=ticket_of)
    to_issue = [order for answer in built.values() for order in answer.to_issue]
    if seen is not None:
        records = [
            (ref.cache_key, answer.claim, generation, answer.ttl_ms)
            for ref, generation in zip(refs, seen, strict=True)
            if (answer := built.get(ref.order_no)) is not None
        ]
        with suppress(RedisError):  # served from the database this time
            claim_cache.store_if_current(redis, records)
    request_issue(to_issue, issue_actor=issue_actor, send=send)
    return {order_no: answer.claim for order_no, answer in built.items()}


async def current_claims(
    session: MpSession, order_nos: list[str], *, issue_actor: str, send: SendIntents
) -> dict[str, CachedClaim]:
    """The claims of the caller's orders: cached records where they may be served, the rest
    rebuilt (re-signed if stale) in a worker thread. Raises ``claim_ownership.UnknownOrders`` if
    the caller lacks one, ``WeChatError`` if a re-sign needed a card ticket WeChat would not give."""
    refs = _refs(session, order_nos)
    try:
        cached = await claim_cache.read_many(async_redis_client(), [ref.cache_key for ref in refs], session.oa_appid)
    except RedisError:
        cached = [None] * len(refs)  # Redis away: answer from the database
    answers = {ref.order_no: claim for ref, claim in zip(refs, cached, strict=True) if claim is not None}
    missing = [ref for ref in refs if ref.order_no not in answers]
    if missing:
        answers.update(await to_thread.run_sync(lambda: rebuild(missing, issue_actor=issue_actor, send=send)))
    return answers


def current_claims_blocking(
    session: MpSession, order_nos: list[str], *, issue_actor: str, send: SendIntents
) -> dict[str, CachedClaim]:
    """:func:`current_claims` in one worker thread, for a call that expects to rebuild (a launch's
    first claim): the cached records, their generations and the card ticket in one round trip."""
    refs = _refs(session, order_nos)
    try:
        read: claim_cache.Reading | None = claim_cache.read_for_rebuild(
            redis_client(), [ref.cache_key for ref in refs], session.oa_appid
        )
    except RedisError:
        read = None  # Redis away: answer from the database
    if read is None:
        return rebuild(refs, issue_actor=issue_actor, send=send)
    answers = {ref.order_no: claim for ref, claim in zip(refs, read.claims, strict=True) if claim is not None}
    missing = [(ref, seen) for ref, seen in zip(refs, read.generations, strict=True) if ref.order_no not in answers]
    if missing:
        still = replace(read, generations=[seen for _, seen in missing])
        answers.update(rebuild([ref for ref, _ in missing], issue_actor=issue_actor, send=send, read=still))
    return answers


def _refs(session: MpSession, order_nos: list[str]) -> list[OrderRef]:
    return [OrderRef(session.mp_appid, session.openid, order_no) for order_no in order_nos]
