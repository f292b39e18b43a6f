"""The reconciles the scheduler enqueues: claims only the client reported are confirmed with
code/get after the delay, and orders of a stuck pre-issue go back to ``issue_orders``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dramatiq
from sqlalchemy import select, update

from cardpipe.db import session_scope
from cardpipe.runtime import redis_client
from models import Event, EventState, Ticket, TicketState
from tests.credentials.conftest import Shop, calls
from wechat.fake import FakeWeChatControl
from workers.broker import broker
from workers.confirmations import confirm_claims, confirm_client_claims
from workers.preissue import requeue_missing_tickets


def _drain(worker: dramatiq.Worker, *queues: str) -> None:
    for queue in queues:
        broker.join(queue)
    worker.join()


def test_code_get_confirms_deletes_or_flags_client_only_claims(shop: Shop, fake: FakeWeChatControl) -> None:
    received, deleted, already = shop.claimed_by_client_only(3)
    tickets = {t.id: t for t in shop.tickets()}
    fake.delete_user_card(shop.card_id, tickets[deleted].code or "")
    shop.set_state([already], TicketState.CLAIMED, confirmed_by_wechat=True)
    # The client reported a ticket WeChat never gave out (it lies, or WeChat lost it)
    never_id = shop.issued(1)[0]
    shop.set_state([never_id], TicketState.CLAIMED, confirmed_by_client=True, claimed_at=datetime.now(UTC))
    before = calls(fake, shop.appid, "/card/code/get")

    confirm_claims.fn(shop.appid, [received, deleted, already, never_id])

    after = {t.id: t for t in shop.tickets()}
    assert after[received].confirmed_by_wechat
    assert after[received].oa_openid == fake.openid(shop.world.person, shop.appid)
    assert after[deleted].state == TicketState.DELETED
    assert after[never_id].state == TicketState.CLAIMED and not after[never_id].confirmed_by_wechat
    assert calls(fake, shop.appid, "/card/code/get") == before + 3  # none for the confirmed one


def test_only_claims_past_the_delay_and_inside_the_window_are_checked(
    shop: Shop, fake: FakeWeChatControl, broker_worker: dramatiq.Worker
) -> None:
    due = shop.claimed_by_client_only(2, ago=timedelta(hours=1))
    recent = shop.claimed_by_client_only(1, ago=timedelta(seconds=5))
    ancient = shop.claimed_by_client_only(1, ago=timedelta(days=3))
    confirm_client_claims.send()
    _drain(broker_worker, "maintenance", "wechat")
    confirmed = {t.id for t in shop.tickets() if t.confirmed_by_wechat}
    assert confirmed == set(due)
    assert not confirmed & {*recent, *ancient}


def test_orders_of_a_stuck_pre_issue_are_issued_again_once_per_window(
    shop: Shop, broker_worker: dramatiq.Worker
) -> None:
    issued = shop.orders(3, tickets=2)
    shop.issue(issued)
    stuck = shop.orders(5, tickets=2)
    with session_scope() as session:
        session.execute(
            update(Event)
            .where(Event.id == shop.event_id)
            .values(state=EventState.PREISSUING, preissue_started_at=datetime.now(UTC) - timedelta(hours=1))
        )
    requeue_missing_tickets.send()
    _drain(broker_worker, "maintenance", "preissue")
    with session_scope() as session:
        per_order = dict(
            session.execute(select(Ticket.order_id, Ticket.id).where(Ticket.order_id.in_(stuck), Ticket.seq == 2)).all()
        )
    assert set(per_order) == set(stuck)
    assert len(shop.ticket_ids()) == 16
    # Within the window the event is not looked at again
    assert redis_client().exists(f"cardpipe:reissue:{shop.event_id}")
