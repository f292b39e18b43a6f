"""The workers' inbox drain: stored pushes and client results are applied from the inbox in
batches, with no message or outbox intent per row; a batch that fails is applied row by row, and a
row that keeps failing is left to the inbox sweep."""

from __future__ import annotations

import time

import dramatiq
from sqlalchemy import select

from cardpipe.db import session_scope
from cardpipe.services import inbox
from models import InboxItem, InboxSource, OfficialAccount, OutboxMessage, TicketState
from tests.claims.conftest import Launch, inbox_rows
from tests.claims.test_pushes import got_card, push
from tests.waiting import wait_until
from workers.inbox_drain import DRAIN_ATTEMPTS, drain_once


def _intent_actors() -> list[str]:
    with session_scope() as session:
        return list(session.scalars(select(OutboxMessage.actor)))


def test_a_push_is_applied_by_the_drain_without_a_message(launch: Launch, broker_worker: dramatiq.Worker) -> None:
    # Given a served ticket
    buyer = launch.buyer()
    launch.login(buyer)
    launch.ready_card_list(buyer)
    (ticket,) = launch.tickets(buyer)

    # When WeChat pushes its user_get_card
    answer = push(launch, got_card(launch, buyer.person, ticket.code or "", ticket.id, create_time=int(time.time())))

    # Then the push was stored without an outbox intent, and the worker's drain claims the ticket
    assert (answer.status_code, answer.text) == (200, "success")
    assert "process_push" not in _intent_actors()
    wait_until(lambda: launch.tickets(buyer)[0].state == TicketState.CLAIMED, what="the drain applied the push")
    assert launch.tickets(buyer)[0].confirmed_by_wechat


def test_a_push_that_fails_is_counted_and_does_not_hold_the_others_back(
    launch: Launch, broker_worker: dramatiq.Worker
) -> None:
    # Given a stored push whose payload cannot be applied, stored before a good one
    buyer = launch.buyer()
    launch.login(buyer)
    launch.ready_card_list(buyer)
    (ticket,) = launch.tickets(buyer)
    with session_scope() as session:
        account_id = session.scalar(select(OfficialAccount.id).where(OfficialAccount.appid == launch.world.oa_appid))
        bad_id = inbox.store(
            session,
            source=InboxSource.WECHAT,
            kind="user_get_card",
            dedupe_key=f"test:unreadable:{ticket.id}",
            payload="<xml><MsgType>event</",
            official_account_id=account_id,
        )

    # When the good push arrives and the drains run until nothing is left for them
    push(launch, got_card(launch, buyer.person, ticket.code or "", ticket.id, create_time=int(time.time())))

    def bad_row() -> InboxItem:
        with session_scope() as session:
            return session.get_one(InboxItem, bad_id)

    def settled() -> bool:
        drain_once()
        return launch.tickets(buyer)[0].state == TicketState.CLAIMED and bad_row().attempts >= DRAIN_ATTEMPTS

    wait_until(settled, what="the good push applied, the bad one tried until the drain gives up")

    # Then the good push claimed its ticket; the bad row is unprocessed, its failures counted,
    # and the drain takes it no more (the sweep's process_push retries it with backoff)
    row = bad_row()
    assert row.processed_at is None and row.attempts == DRAIN_ATTEMPTS
    assert row.last_error and "Error" in row.last_error
    drain_once()
    assert bad_row().attempts == DRAIN_ATTEMPTS


def test_a_result_the_push_proved_is_applied_by_the_drain_without_a_message(
    launch: Launch, broker_worker: dramatiq.Worker
) -> None:
    # Given a ticket added at WeChat, whose user_get_card push is applied
    buyer = launch.buyer(tickets=2)
    launch.login(buyer)
    answer = launch.add_card(buyer, launch.ready_card_list(buyer))
    wait_until(lambda: all(t.confirmed_by_wechat for t in launch.tickets(buyer)), what="the pushes applied")

    # When the mini program posts its result
    assert launch.post_result(buyer, answer).status_code == 202

    # Then the drain records the client's signal, with no message and no code/decrypt call
    assert "process_client_result" not in _intent_actors()
    wait_until(lambda: launch.settled(buyer), what="claimed by both signals")
    assert "process_client_result" not in _intent_actors()
    assert "/card/code/decrypt" not in launch.fake.stats(launch.world.oa_appid).get("errcodes", {})
    (row,) = [r for r in inbox_rows(InboxSource.CLIENT)]
    assert (row.processed_at is not None, row.attempts, row.last_error) == (True, 1, None)
