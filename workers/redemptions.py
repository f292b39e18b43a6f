"""Telling WeChat about redemptions and revocations (queue ``wechat``), and the sweep that
re-queues what a lost message left behind (queue ``maintenance``).

The gate's answer never waits on these: they run after the redemption is committed. They retry
until WeChat takes the call (no retry limit; the backoff tops out at ``MAX_BACKOFF_MS``); WeChat
errors (-1, timeouts, token, 45009/45011 quota) propagate to dramatiq's Retries. Why a retried
consume is still exactly one consume in effect: ``cardpipe.services.redemption_sync``.

Offline uploads and the end of an event queue :func:`consume_redeemed_codes`, one message per
chunk of redemptions; a gate's online scan queues :func:`consume_redeemed_code`, one per scan.
"""

from __future__ import annotations

from datetime import timedelta

import dramatiq

import workers.broker  # noqa: F401  (binds the broker before any actor is declared)
from cardpipe.db import session_scope
from cardpipe.runtime import credential_store
from cardpipe.services import redemption_sync
from wechat.client import CardApi

MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 5 * 60_000
#: A pending row no worker has touched for this long has lost its message. Longer than the
#: largest backoff, so a message that is merely waiting to be retried is not doubled.
RESYNC_IDLE = timedelta(minutes=15)


def _card_api(appid: str) -> CardApi:
    return credential_store().card_api(appid)


@dramatiq.actor(queue_name="wechat", max_retries=None, min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS)
def consume_redeemed_code(redemption_id: int) -> None:
    """``code/get`` then ``code/consume`` for one ``ok`` redemption."""
    redemption_sync.sync_consume(redemption_id, _card_api)


@dramatiq.actor(queue_name="wechat", max_retries=None, min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS)
def consume_redeemed_codes(redemption_ids: list[int]) -> None:
    """:func:`consume_redeemed_code` for each of a chunk of ``ok`` redemptions still pending; a
    retry redoes only those not settled yet."""
    redemption_sync.sync_consumes(redemption_ids, _card_api)


@dramatiq.actor(queue_name="wechat", max_retries=None, min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS)
def make_code_unavailable(ticket_id: int) -> None:
    """``code/get`` then ``code/unavailable`` for one revoked ticket."""
    redemption_sync.sync_revocation(ticket_id, _card_api)


@dramatiq.actor(queue_name="maintenance", max_retries=3)
def resync_redemptions() -> None:
    """Re-queue pending consumes and revocations whose message was lost (for the scheduler)."""
    with session_scope() as session:
        redemption_ids, ticket_ids = redemption_sync.unsynced(session, idle_for=RESYNC_IDLE)
    chunk = redemption_sync.CONSUME_CHUNK
    for start in range(0, len(redemption_ids), chunk):
        consume_redeemed_codes.send(redemption_ids[start : start + chunk])
    for ticket_id in ticket_ids:
        make_code_unavailable.send(ticket_id)
