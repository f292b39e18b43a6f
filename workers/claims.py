"""Claims queue: apply what ``wx.addCard`` returned to the Mini Program (stored in the inbox by
``POST /v1/orders/{order_no}/claim/result``).

At-least-once safe: the inbox row is taken with ``FOR UPDATE SKIP LOCKED`` and marked processed
in the same transaction as the ticket updates, which are guarded themselves. WeChat errors that
may clear up (busy, quota, token) propagate to dramatiq's (quota-aware) retry; a failed attempt
is counted on the inbox row first.
"""

from __future__ import annotations

import dramatiq

import workers.broker  # noqa: F401  (binds the broker before any actor is declared)
from cardpipe.db import session_scope
from cardpipe.outbound import deferral_ms
from cardpipe.runtime import credential_store, redis_client
from cardpipe.services import claim_cache, inbox
from cardpipe.services.claim_results import StoredResult, apply

MAX_RETRIES = 10


@dramatiq.actor(queue_name="claims", max_retries=MAX_RETRIES)
def process_client_result(inbox_id: int) -> None:
    store = credential_store()
    try:
        with session_scope() as session:
            payload = inbox.take(session, inbox_id)
            if payload is None:
                return
            stored = StoredResult.model_validate_json(payload)
            applied = apply(
                session,
                stored,
                decrypt=store.card_api(stored.oa_appid).code_decrypt,
                card_ticket=store.card_ticket,
            )
            inbox.mark_processed(session, inbox_id, note="; ".join(applied.notes) or None)
            stale = stored.cache_keys if applied.orders else []
    except Exception as exc:
        if deferral_ms(exc) is None:  # a quota deferral is not a failed attempt
            inbox.record_failure(inbox_id, exc)
        raise
    claim_cache.invalidate(redis_client(), stale)
