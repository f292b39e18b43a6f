"""Pre-issue actors on the ``preissue`` queue. Messages carry ids only; both actors are safe to
run twice (see :mod:`cardpipe.services.preissue`). WeChat quota and transport errors propagate
to dramatiq's retries. The planner's chunks go through the outbox (``workers.outbox``): a chunk
Redis refuses is sent by the relay once it is back."""

from __future__ import annotations

import dramatiq

import workers.broker  # noqa: F401  (binds the broker before the actors are declared)
from cardpipe.db import session_scope
from cardpipe.runtime import credential_store, redis_client
from cardpipe.services.preissue import issue, planner
from cardpipe.settings import get_settings
from workers.outbox import record_and_send

#: The planner reads the stock, may deposit codes for a million tickets (10,000 WeChat calls)
#: and streams every order id into chunk messages.
PLAN_TIME_LIMIT_MS = 30 * 60_000
#: The stock lock outlives a crashed planner by at most this long.
STOCK_LOCK_TTL_S = 15 * 60


@dramatiq.actor(queue_name="preissue", max_retries=10, min_backoff=1_000, max_backoff=300_000)
def issue_orders(event_id: int, order_ids: list[int]) -> None:
    """Create the missing tickets of ``order_ids`` (signed, ``ready``) in one transaction."""
    with session_scope() as session:
        issue.issue_orders(session, event_id, order_ids, card_ticket=credential_store().card_ticket)


@dramatiq.actor(
    queue_name="preissue", max_retries=10, min_backoff=5_000, max_backoff=600_000, time_limit=PLAN_TIME_LIMIT_MS
)
def plan_preissue(event_id: int) -> None:
    """Cover the event's tickets with stock, then send its orders to :func:`issue_orders` in chunks."""
    lock = redis_client().lock(
        f"cardpipe:lock:preissue-stock:{event_id}", timeout=STOCK_LOCK_TTL_S, blocking_timeout=60, thread_local=False
    )
    planner.plan_preissue(
        event_id,
        sessions=session_scope,
        card_api=credential_store().card_api,
        send_chunk=lambda event_id, chunk: record_and_send(issue_orders.actor_name, event_id, chunk),
        chunk_tickets=get_settings().preissue_chunk_tickets,
        stock_lock=lock,
    )
