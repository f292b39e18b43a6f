"""Maintenance: send again the inbox rows whose processing message was lost (the database, not
the queue, is the source of truth). The scheduler enqueues :func:`requeue_stale_inbox`."""

from __future__ import annotations

import logging

import dramatiq

import workers.broker  # noqa: F401  (binds the broker before any actor is declared)
from cardpipe.db import session_scope
from cardpipe.services import inbox
from models import InboxSource
from workers.claims import process_client_result
from workers.events import process_push

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
