"""Events queue: WeChat card event pushes stored in the inbox.

Stored pushes are applied in batches by the inbox drain (:mod:`workers.inbox_drain`);
:func:`process_push` applies one push
(:func:`cardpipe.services.push_effects.apply_push`) for the inbox sweep, which sends the rows the
drain left (lost, or failing). Safe to run twice: the push's inbox row is locked and marked
processed in the transaction of its guarded updates. A failed attempt is counted on the row (a
quota deferral is not a failure).
"""

from __future__ import annotations

import dramatiq

import workers.broker  # noqa: F401  (binds the broker before any actor is declared)
from cardpipe.db import session_scope
from cardpipe.outbound import deferral_ms
from cardpipe.services import inbox
from cardpipe.services.push_effects import apply_push
from workers.claims import invalidate_or_queue

MAX_RETRIES = 10


@dramatiq.actor(queue_name="events", max_retries=MAX_RETRIES)
def process_push(inbox_id: int) -> None:
    try:
        with session_scope() as session:
            stale = apply_push(session, inbox_id)
    except Exception as exc:
        if deferral_ms(exc) is None:  # a quota deferral is not a failed attempt
            inbox.record_failure(inbox_id, exc)
        raise
    invalidate_or_queue(stale or [])
