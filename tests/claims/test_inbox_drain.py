"""The workers' inbox drain: stored pushes and client results are applied from the inbox in
batches, with no message or outbox intent per row; a batch that fails is applied row by row, and a
row that keeps failing is left to the inbox sweep."""

from __future__ import annotations

import time

import dramatiq
import pytest
from sqlalchemy import select

from cardpipe.db import session_scope
from cardpipe.services import claim_results, inbox, push_effects, result_effects
from cardpipe.services.claim_ownership import OrderRef
from cardpipe.services.claim_results import AddCardResult
from models import InboxItem, InboxSource, OfficialAccount, OutboxMessage, TicketState
from tests.claims.conftest import Launch, inbox_rows
from tests.claims.test_pushes import got_card, push
from tests.waiting import wait_until
from wechat.pushes import render_event
from workers.claims import process_client_result, wechat_ports
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


def test_a_batch_of_pushes_decides_each_on_the_locked_rows_in_arrival_order(
    launch: Launch, broker_worker: dramatiq.Worker
) -> None:
    # Given a served ticket and, stored in one transaction (no drain sees them before the batch),
    # its user_get_card, a redelivery of it under another CreateTime, and one with a wrong code
    buyer = launch.buyer()
    launch.login(buyer)
    launch.ready_card_list(buyer)
    (ticket,) = launch.tickets(buyer)
    first = got_card(launch, buyer.person, ticket.code or "", ticket.id, create_time=int(time.time()))
    again = got_card(launch, buyer.person, ticket.code or "", ticket.id, create_time=first.create_time + 1)
    forged = got_card(launch, buyer.person, "999999999999", ticket.id, create_time=first.create_time + 2)
    with session_scope() as session:
        account_id = session.scalar(select(OfficialAccount.id).where(OfficialAccount.appid == launch.world.oa_appid))
        ids: list[int] = []
        for n, event in enumerate((first, again, forged)):
            inbox_id = inbox.store(
                session,
                source=InboxSource.WECHAT,
                kind="user_get_card",
                dedupe_key=f"test:batch:{ticket.id}:{n}",
                payload=render_event(event),
                official_account_id=account_id,
            )
            assert inbox_id is not None
            ids.append(inbox_id)

        # When one batch applies them
        drained = push_effects.apply_pending(session, limit=50, max_attempts=DRAIN_ATTEMPTS)

    # Then the first claimed the ticket with the holder's OA openid, the redelivery changed
    # nothing, and the wrong code is noted; every row is processed, the order's record dropped
    assert set(ids) <= set(drained.inbox_ids)
    (claimed,) = launch.tickets(buyer)
    assert claimed.state == TicketState.CLAIMED and claimed.confirmed_by_wechat
    assert claimed.oa_openid == first.from_user and claimed.confirmed_at is not None
    with session_scope() as session:
        rows = {row.id: row for row in session.scalars(select(InboxItem).where(InboxItem.id.in_(ids)))}
        assert all(row.processed_at is not None for row in rows.values())
        assert [rows[i].last_error for i in ids[:2]] == [None, None]
        assert "not the ticket's code" in (rows[ids[2]].last_error or "")
    assert drained.cache_keys


def test_a_batch_of_results_records_the_reports_the_pushes_proved(
    launch: Launch, broker_worker: dramatiq.Worker
) -> None:
    # Given two tickets added at WeChat, whose user_get_card pushes are applied, and the
    # mini program's result stored in the transaction the batch runs in (no drain sees it first)
    buyer = launch.buyer(tickets=2)
    launch.login(buyer)
    answer = launch.add_card(buyer, launch.ready_card_list(buyer))
    wait_until(lambda: all(t.confirmed_by_wechat for t in launch.tickets(buyer)), what="the pushes applied")
    result = AddCardResult.model_validate({k: v for k, v in answer.items() if k in ("errMsg", "cardList")})
    with session_scope() as session:
        ref = OrderRef(launch.world.mp_appid, buyer.mp_openid, buyer.order_no)
        accepted = claim_results.accept(session, [ref], result, card_ticket=lambda appid: pytest.fail("no re-sign"))

        # When one batch applies it
        drained = result_effects.apply_ready(
            session,
            limit=50,
            max_attempts=DRAIN_ATTEMPTS,
            grace_s=60,
            ports=wechat_ports(),
            passed_to=process_client_result.actor_name,
        )

    # Then both reports are recorded in the batch, with no hand-over and no note
    assert accepted.inbox_id in drained.inbox_ids and drained.need_wechat == []
    assert all(t.confirmed_by_client and t.confirmed_by_wechat for t in launch.tickets(buyer))
    with session_scope() as session:
        row = session.get_one(InboxItem, accepted.inbox_id)
        assert (row.processed_at is not None, row.last_error) == (True, None)
