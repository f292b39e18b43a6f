"""Claim confirmations: the claims only the client reported go to WeChat's ``code/get``.

A claim the client reported and WeChat's ``user_get_card`` push never confirmed is looked up,
past the configured delay, one ``code/get`` per ticket; the answer is applied by
``cardpipe.services.claim_confirmation``, guarded by the ticket's flags, so both actors are safe
to run twice. No transaction stays open across a WeChat call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import dramatiq

import workers.broker  # noqa: F401  (binds the broker before any actor is declared)
from cardpipe import clock
from cardpipe.db import session_scope
from cardpipe.runtime import credential_store, redis_client
from cardpipe.services import claim_cache, claim_ownership
from cardpipe.services.claim_confirmation import apply as apply_confirmation
from cardpipe.services.claim_confirmation import look_up, still_unconfirmed, unconfirmed_client_claims
from cardpipe.settings import get_settings

#: Tickets per ``confirm_claims`` message (one code/get each).
CONFIRM_BATCH = 50
CONFIRM_SCAN_LIMIT = 10_000


def _batches(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


@dramatiq.actor(queue_name="maintenance", max_retries=3)
def confirm_client_claims() -> None:
    """Send the claims only the client reported, past the configured delay, to code/get."""
    settings = get_settings()
    with session_scope() as session:
        pending = unconfirmed_client_claims(
            session,
            now=clock.now(),
            delay_s=settings.claim_confirm_delay_s,
            max_age_s=settings.claim_confirm_max_age_s,
            limit=CONFIRM_SCAN_LIMIT,
        )
    for appid, ticket_ids in pending.items():
        for batch in _batches(ticket_ids, CONFIRM_BATCH):
            confirm_claims.send(appid, batch)


@dramatiq.actor(queue_name="wechat", max_retries=10, min_backoff=5_000, max_backoff=600_000)
def confirm_claims(appid: str, ticket_ids: list[int]) -> None:
    """code/get each ticket still unconfirmed; no transaction stays open across a WeChat call."""
    api = credential_store().card_api(appid)
    for ticket_id in ticket_ids:
        with session_scope() as session:
            claim = still_unconfirmed(session, ticket_id)
        if claim is None:
            continue
        info = look_up(claim, lambda card_id, code: api.code_get(card_id, code, check_consume=False))
        with session_scope() as session:
            apply_confirmation(session, claim, info)
            stale = claim_ownership.cache_keys(session, [claim.order_id])
        claim_cache.invalidate(redis_client(), stale)
