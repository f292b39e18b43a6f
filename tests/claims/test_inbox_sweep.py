"""The database, not the queue, is the source of truth: an inbox row whose message was lost is
sent again by the maintenance sweep, and processed once."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import dramatiq
from sqlalchemy import update

from cardpipe.db import get_engine, session_scope
from cardpipe.services import pushes
from models import InboxItem, TicketState
from tests.claims.conftest import Launch, drain
from tests.waiting import wait_until
from wechat.pushes import UserGetCard, render_event
from workers.inbox import STALE_AFTER_S, requeue_stale_inbox


def test_a_push_whose_message_was_lost_is_processed_after_the_sweep(
    launch: Launch, broker_worker: dramatiq.Worker
) -> None:
    # Given a user_get_card stored in the inbox, but its message never reached the queue
    buyer = launch.buyer()
    (ticket,) = launch.tickets(buyer)
    event = UserGetCard(
        to_user=launch.world.original_id,
        from_user="o-oa-holder",
        create_time=int(time.time()),
        card_id=launch.card_id,
        code=ticket.code or "",
        outer_str=str(ticket.id),
    )
    account = pushes.push_account(launch.world.oa_appid)
    xml = render_event(event)
    query = pushes.PushQuery("unused", str(int(time.time())), "sweep-nonce")
    inbox_id = pushes.store(get_engine(), account, query, xml.encode(), event, xml)
    assert inbox_id is not None
    with session_scope() as session:  # received a while ago
        stale = datetime.now(UTC) - timedelta(seconds=STALE_AFTER_S + 1)
        session.execute(update(InboxItem).where(InboxItem.id == inbox_id).values(received_at=stale))

    # When the scheduler's sweep runs (twice: it is idempotent)
    requeue_stale_inbox.send()
    drain(broker_worker)
    requeue_stale_inbox.send()
    drain(broker_worker)

    # Then the push was applied once
    wait_until(lambda: launch.tickets(buyer)[0].state == TicketState.CLAIMED, what="claimed by the swept push")
    with session_scope() as session:
        row = session.get_one(InboxItem, inbox_id)
        assert row.processed_at is not None and row.attempts == 1
