"""Pre-issue actors: the planner and the chunk issue on the ``preissue`` queue, and the scheduler's
requeue of stuck pre-issues. Messages carry ids only; every actor is safe to run twice (see
:mod:`cardpipe.services.preissue`). WeChat quota and transport errors propagate to dramatiq's
retries. The planner's chunks go through the outbox (``workers.outbox``): a chunk Redis refuses
is sent by the relay once it is back."""

from __future__ import annotations

import logging
from datetime import timedelta

import dramatiq
from sqlalchemy import select

import workers.broker  # noqa: F401  (binds the broker before the actors are declared)
from cardpipe import clock
from cardpipe.db import session_scope
from cardpipe.runtime import credential_store, redis_client
from cardpipe.services.preissue import issue, planner, tracking
from cardpipe.settings import get_settings
from models import Event, EventState
from workers.outbox import record_and_send

log = logging.getLogger(__name__)

#: The planner reads the stock, may deposit codes for a million tickets (10,000 WeChat calls)
#: and streams every order id into chunk messages.
PLAN_TIME_LIMIT_MS = 30 * 60_000
#: The stock lock outlives a crashed planner by at most this long.
STOCK_LOCK_TTL_S = 15 * 60
#: Orders per re-enqueued ``issue_orders`` message, and at most this many orders per event per run.
REISSUE_ORDERS_PER_MESSAGE = 500
REISSUE_ORDERS_PER_RUN = 100_000


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


@dramatiq.actor(queue_name="maintenance", max_retries=3)
def requeue_missing_tickets() -> None:
    """Pre-issues started a while ago and not done go back to work (an event at most once per
    ``preissue_stuck_after_s``): an event whose stock the planner never recorded as covering its
    tickets (its message was lost or dead-lettered) gets its planner again, which raises the stock
    and sends the missing orders; otherwise its orders still lacking tickets go to ``issue_orders``."""
    stuck_after = get_settings().preissue_stuck_after_s
    cutoff = clock.now() - timedelta(seconds=stuck_after)
    with session_scope() as session:
        events = list(
            session.scalars(
                select(Event.id).where(Event.state == EventState.PREISSUING, Event.preissue_started_at < cutoff)
            )
        )
    for event_id in events:
        if not redis_client().set(f"cardpipe:reissue:{event_id}", "1", nx=True, ex=max(1, int(stuck_after))):
            continue
        with session_scope() as session:
            replan = tracking.stock_uncovered(session, event_id)
            order_ids = [] if replan else tracking.orders_missing_tickets(session, event_id, REISSUE_ORDERS_PER_RUN)
        if replan:
            plan_preissue.send(event_id)
            log.warning("event %s: its stock does not cover its tickets; planner sent again", event_id)
        for start in range(0, len(order_ids), REISSUE_ORDERS_PER_MESSAGE):
            issue_orders.send(event_id, order_ids[start : start + REISSUE_ORDERS_PER_MESSAGE])
        if order_ids:
            log.warning("event %s: %d orders still lacked tickets; issued again", event_id, len(order_ids))
