"""Maintenance: send again the inbox rows whose processing message was lost (the database, not
the queue, is the source of truth), and forget the push replay guard's expired pairs. The
scheduler enqueues :func:`requeue_stale_inbox`."""

from __future__ import annotations

import logging

import dramatiq

import workers.broker  # noqa: F401  (binds the broker before any actor is declared)
from cardpipe.db import session_scope
from cardpipe.services import inbox, push_guard
from cardpipe.settings import get_settings
from models import InboxSource
from workers.claims import process_client_result
from workers.pushes import process_push

log = logging.getLogger(__name__)

#: Rows this old and still unprocessed have lost their message (or keep failing).
STALE_AFTER_S = 120.0
#: A row that failed this often is left to ops (its last_error says why).
MAX_ATTEMPTS = 20
BATCH = 1000


@dramatiq.actor(queue_name="maintenance", max_retries=0)
def requeue_stale_inbox() -> None:
    with session_scope() as session:
        pushes = inbox.stale_unprocessed(
            session, source=InboxSource.WECHAT, older_than_s=STALE_AFTER_S, max_attempts=MAX_ATTEMPTS, limit=BATCH
        )
        results = inbox.stale_unprocessed(
            session, source=InboxSource.CLIENT, older_than_s=STALE_AFTER_S, max_attempts=MAX_ATTEMPTS, limit=BATCH
        )
        # Pairs older than twice the window: their pushes are refused as stale anyway.
        push_guard.prune(session, older_than_s=2 * get_settings().push_max_age_s)
    for inbox_id in pushes:
        process_push.send(inbox_id)
    for inbox_id in results:
        process_client_result.send(inbox_id)
    if pushes or results:
        log.info(
            "sent %d pushes and %d client results again (unprocessed after %ss)",
            len(pushes),
            len(results),
            STALE_AFTER_S,
        )
