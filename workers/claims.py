"""Claims queue: what ``wx.addCard`` returned to the Mini Program (stored in the inbox by
``POST /v1/claims/result``), and dropping poll records.

Stored results are applied in batches by the inbox drain (:mod:`workers.inbox_drain`);
:func:`process_client_result` applies one (:func:`cardpipe.services.result_effects.apply_one`)
for the inbox sweep, which sends the rows the drain left. A successful result whose tickets WeChat
has not pushed yet waits for the push until the result is ``claim_push_grace_ms`` old (the message
is deferred, uncounted), then is applied whatever arrived.

At-least-once safe: the inbox row is taken with ``FOR UPDATE SKIP LOCKED`` and marked processed
in the same transaction as the ticket updates, which are guarded themselves. WeChat errors that
may clear up (busy, quota, token) propagate to dramatiq's (quota-aware) retry; a failed attempt
is counted on the inbox row first.
"""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import CurrentMessage

import workers.broker  # noqa: F401  (binds the broker before any actor is declared)
from cardpipe.db import session_scope
from cardpipe.outbound import deferral_ms
from cardpipe.runtime import credential_store, redis_client
from cardpipe.services import claim_cache, inbox
from cardpipe.services.result_effects import WeChatPorts, apply_one
from cardpipe.settings import get_settings
from workers.outbox import record_and_send

MAX_RETRIES = 10


def wechat_ports() -> WeChatPorts:
    store = credential_store()
    return WeChatPorts(decrypt=lambda appid: store.card_api(appid).code_decrypt, card_ticket=store.card_ticket)


@dramatiq.actor(queue_name="claims", max_retries=MAX_RETRIES)
def process_client_result(inbox_id: int) -> None:
    try:
        with session_scope() as session:
            stale = apply_one(session, inbox_id, wechat_ports(), grace_s=_push_grace_s())
    except Exception as exc:
        if deferral_ms(exc) is None:  # a quota deferral is not a failed attempt
            inbox.record_failure(inbox_id, exc)
        raise
    invalidate_or_queue(stale or [])


def _push_grace_s() -> float:
    """How long a result may wait for WeChat's push, counted from its arrival (no wait when run
    outside a worker)."""
    if CurrentMessage.get_current_message() is None:
        return 0.0
    return get_settings().claim_push_grace_ms / 1000


@dramatiq.actor(queue_name="claims", max_retries=MAX_RETRIES, min_backoff=500, max_backoff=10_000)
def invalidate_claims(cache_keys: list[str]) -> None:
    """Drop poll records a committed change made stale (queued through the outbox by writers
    that could not reach Redis themselves)."""
    claim_cache.invalidate(redis_client(), cache_keys)


def invalidate_or_queue(cache_keys: list[str]) -> None:
    """Drop the poll records of a committed change; with Redis away, leave it to the outbox (a
    retry of the message that made the change would find nothing left to do, nor to invalidate)."""
    if cache_keys and not claim_cache.invalidate_quietly(redis_client(), cache_keys):
        record_and_send(invalidate_claims.actor_name, cache_keys)
