"""Issuing chunks: one signed ``ready`` ticket per (order, seq), unique codes, idempotent, exact
progress counters; colliding codes are redrawn."""

from __future__ import annotations

import json
import threading
from collections import Counter

from sqlalchemy import func, select

from cardpipe.db import session_scope
from cardpipe.runtime import credential_store
from cardpipe.services import events
from cardpipe.services.codes import new_codes
from cardpipe.services.preissue import CodeSource, tracking
from cardpipe.services.preissue.issue import IssueOutcome, issue_orders
from cardpipe.services.preissue.planner import plan_preissue
from cardpipe.services.preissue.stock import card_stock
from models import EventState, Order, Ticket, TicketState
from tests.preissue.conftest import IssueAll, Organiser, event_row, order_ids, signature_ok, tickets_of


def _issue(event_id: int, ids: list[int], draw_codes: CodeSource = new_codes) -> IssueOutcome:
    with session_scope() as session:
        return issue_orders(session, event_id, ids, card_ticket=credential_store().card_ticket, draw_codes=draw_codes)


def test_each_order_gets_its_tickets_signed_and_ready(organiser: Organiser) -> None:
    # Given an event with 3 orders of 1, 2 and 3 tickets
    event_id = organiser.create_event()
    organiser.import_csv(event_id, "order_no,openid,ticket_count\nA,oA,1\nB,oB,2\nC,oC,3\n")
    with session_scope() as session:
        ids = order_ids(session, event_id)

    # When they are issued in one chunk
    outcome = _issue(event_id, ids)

    # Then there is one ready ticket per (order, seq), each code of the policy and signed by the
    # current api_ticket, with outer_str naming the ticket
    assert (outcome.tickets_created, outcome.orders_completed) == (6, 3)
    current = credential_store().card_ticket(organiser.world.oa_appid)
    with session_scope() as session:
        tickets = tickets_of(session, event_id)
        event = event_row(session, event_id)
    assert sorted((t.order_id, t.seq) for t in tickets) == sorted(
        (order_id, seq) for order_id, count in zip(ids, (1, 2, 3), strict=True) for seq in range(1, count + 1)
    )
    assert len({t.code for t in tickets}) == len({t.nonce for t in tickets}) == 6
    for ticket in tickets:
        assert ticket.state == TicketState.READY
        assert ticket.card_id == event.card_id and ticket.code is not None
        assert len(ticket.code) == event.code_length and set(ticket.code) <= set(event.code_alphabet)
        assert ticket.ticket_version == current.version
        ext = json.loads(ticket.card_ext or "")
        assert ext["code"] == ticket.code and ext["outer_str"] == str(ticket.id) and ext["nonce_str"] == ticket.nonce
        assert signature_ok(current.value, ticket.card_id, ticket.card_ext or "")
    assert (event.tickets_issued, event.orders_complete) == (6, 3)


def test_running_a_chunk_twice_creates_nothing_twice(organiser: Organiser) -> None:
    event_id = organiser.create_event()
    organiser.import_orders(event_id, 50, tickets=2)
    with session_scope() as session:
        ids = order_ids(session, event_id)

    first = _issue(event_id, ids)
    again = _issue(event_id, ids)
    overlapping = _issue(event_id, ids[10:20])

    assert first.tickets_created == 100
    assert again == overlapping == IssueOutcome(0, 0, 0)
    with session_scope() as session:
        assert session.scalar(select(func.count()).where(Ticket.event_id == event_id)) == 100
        event = event_row(session, event_id)
        assert (event.tickets_issued, event.orders_complete) == (100, 50)


def test_concurrent_runs_of_one_chunk_create_each_ticket_once(organiser: Organiser) -> None:
    # Given the same chunk delivered to four workers at once
    event_id = organiser.create_event()
    organiser.import_orders(event_id, 300)
    with session_scope() as session:
        ids = order_ids(session, event_id)
    credential_store().card_ticket(organiser.world.oa_appid)
    outcomes: list[IssueOutcome] = []
    start = threading.Barrier(4)

    def run() -> None:
        start.wait()
        outcomes.append(_issue(event_id, ids))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then one of them created everything, the others nothing, and the counters are exact
    assert sorted(o.tickets_created for o in outcomes) == [0, 0, 0, 300]
    with session_scope() as session:
        pairs = session.execute(select(Ticket.order_id, Ticket.seq).where(Ticket.event_id == event_id)).all()
        event = event_row(session, event_id)
    assert len(pairs) == len(set(pairs)) == 300
    assert (event.tickets_issued, event.orders_complete) == (300, 300)


def test_overlapping_chunks_at_once_keep_one_ticket_per_seat_and_exact_counters(organiser: Organiser) -> None:
    # Given chunks that share orders (a redelivery, a scheduler re-queue, a just-in-time issue)
    event_id = organiser.create_event()
    organiser.import_orders(event_id, 400, tickets=2)
    with session_scope() as session:
        ids = order_ids(session, event_id)
    credential_store().card_ticket(organiser.world.oa_appid)
    chunks = [ids[:250], ids[150:], ids[::3], ids[200:201], ids[100:300:2]]
    start = threading.Barrier(len(chunks))
    outcomes: list[IssueOutcome] = []

    def run(chunk: list[int]) -> None:
        start.wait()
        outcomes.append(_issue(event_id, chunk))

    threads = [threading.Thread(target=run, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then every seat has one ticket, and the counters add up to exactly the orders and tickets
    assert sum(o.tickets_created for o in outcomes) == 800
    assert sum(o.orders_completed for o in outcomes) == 400
    with session_scope() as session:
        pairs = session.execute(select(Ticket.order_id, Ticket.seq).where(Ticket.event_id == event_id)).all()
        event = event_row(session, event_id)
    assert len(pairs) == len(set(pairs)) == 800
    assert (event.tickets_issued, event.orders_complete) == (800, 400)


def test_a_colliding_code_is_redrawn_not_a_failure(organiser: Organiser) -> None:
    # Given a first order issued, and a code source that first hands out that order's code again
    event_id = organiser.create_event()
    organiser.import_orders(event_id, 5)
    with session_scope() as session:
        ids = order_ids(session, event_id)
    _issue(event_id, ids[:1])
    with session_scope() as session:
        taken = session.scalar(select(Ticket.code).where(Ticket.order_id == ids[0]))
    assert taken is not None
    draws: list[int] = []

    def colliding(count: int, length: int, alphabet: str) -> list[str]:
        draws.append(count)
        fresh = new_codes(count, length, alphabet)
        return [taken, *fresh[1:]] if len(draws) == 1 else fresh

    # When the other orders are issued
    outcome = _issue(event_id, ids[1:], draw_codes=colliding)

    # Then the colliding ticket got a new code (and a new signature) and every order is complete
    assert (outcome.tickets_created, outcome.codes_redrawn) == (4, 1)
    assert draws == [4, 1]
    current = credential_store().card_ticket(organiser.world.oa_appid)
    with session_scope() as session:
        tickets = tickets_of(session, event_id)
    assert len(tickets) == len({t.code for t in tickets}) == 5
    assert all(signature_ok(current.value, t.card_id, t.card_ext or "") for t in tickets)
    assert all(json.loads(t.card_ext or "")["code"] == t.code for t in tickets)


def test_a_sparse_set_of_orders_is_issued_exactly(organiser: Organiser) -> None:
    # Given orders picked far apart (as the scheduler re-queues leftovers), mixed with foreign ids
    event_id = organiser.create_event()
    other_id = organiser.create_event()
    organiser.import_orders(event_id, 60, tickets=2)
    organiser.import_orders(other_id, 5, start=500)
    with session_scope() as session:
        ids = order_ids(session, event_id)
        foreign = order_ids(session, other_id)
    picked = ids[::7]

    outcome = _issue(event_id, [*picked, *foreign])

    assert (outcome.tickets_created, outcome.orders_completed) == (2 * len(picked), len(picked))
    with session_scope() as session:
        issued = session.scalars(select(Ticket.order_id).where(Ticket.event_id == event_id).distinct())
        assert sorted(issued) == picked
        assert tracking.orders_missing_tickets(session, event_id, 100) == [i for i in ids if i not in picked]
    assert _issue(event_id, picked) == IssueOutcome(0, 0, 0)


def test_orders_of_another_event_are_ignored(organiser: Organiser) -> None:
    event_id = organiser.create_event()
    other_id = organiser.create_event()
    organiser.import_orders(event_id, 3)
    organiser.import_orders(other_id, 3, start=100)
    with session_scope() as session:
        foreign = order_ids(session, other_id)

    assert _issue(event_id, foreign).tickets_created == 0


def test_planner_raises_the_stock_by_exactly_the_shortfall(organiser: Organiser, issue_all: IssueAll) -> None:
    # Given a card created with stock 1 and 40 orders of 2 tickets
    event_id = organiser.create_event()
    organiser.import_orders(event_id, 40, tickets=2)
    with session_scope() as session:
        card_id = event_row(session, event_id).card_id
    assert card_id is not None
    api = credential_store().card_api(organiser.world.oa_appid)
    assert card_stock(api, card_id) == 1

    # When pre-issue runs (twice)
    issue_all(event_id)
    issue_all(event_id)

    # Then WeChat's stock is exactly the 80 tickets, raised once
    assert card_stock(api, card_id) == 80
    modify_calls = organiser.fake.stats(organiser.world.oa_appid)["calls_by_appid"][organiser.world.oa_appid]
    assert modify_calls["/card/modifystock"] == 1
    with session_scope() as session:
        progress = tracking.preissue_progress(session, event_id)
    assert progress.state == EventState.ISSUED
    assert (progress.orders_total, progress.orders_complete) == (40, 40)
    assert (progress.tickets_total, progress.tickets_issued) == (80, 80)
    assert progress.tickets_by_state is not None and progress.tickets_by_state["ready"] == 80


def test_pending_work_is_the_orders_without_all_their_tickets(organiser: Organiser) -> None:
    event_id = organiser.create_event()
    organiser.import_orders(event_id, 10, tickets=2)
    with session_scope() as session:
        ids = order_ids(session, event_id)
    _issue(event_id, ids[::2])

    with session_scope() as session:
        assert tracking.orders_missing_tickets(session, event_id, 100) == ids[1::2]
        assert tracking.orders_missing_tickets(session, event_id, 2) == ids[1:4:2]
        assert tracking.orders_missing_tickets(session, event_id, 100, after_id=ids[5]) == ids[7::2]


def test_a_replanned_event_sends_only_the_orders_still_missing_tickets(organiser: Organiser) -> None:
    event_id = organiser.create_event()
    organiser.import_orders(event_id, 10)
    with session_scope() as session:
        ids = order_ids(session, event_id)
        tracking.start_preissue(session, event_id)
    _issue(event_id, ids[:7])
    sent: list[list[int]] = []

    outcome = plan_preissue(
        event_id,
        sessions=session_scope,
        card_api=credential_store().card_api,
        send_chunk=lambda _event, chunk: sent.append(chunk),
        chunk_tickets=2,
    )

    assert sent == [ids[7:9], ids[9:]]
    assert (outcome.orders_sent, outcome.chunks_sent) == (3, 2)


def test_an_event_reopens_when_orders_arrive_after_it_was_issued(organiser: Organiser, issue_all: IssueAll) -> None:
    event_id = organiser.create_event()
    organiser.import_orders(event_id, 4)
    issue_all(event_id)
    organiser.import_orders(event_id, 2, start=100)
    with session_scope() as session:
        assert event_row(session, event_id).state == EventState.ISSUED
        assert tracking.start_preissue(session, event_id).state == EventState.PREISSUING

    issue_all(event_id)

    with session_scope() as session:
        event = event_row(session, event_id)
        assert (event.state, event.orders_complete, event.tickets_issued) == (EventState.ISSUED, 6, 6)


def test_an_event_without_orders_is_issued_at_once(organiser: Organiser, issue_all: IssueAll) -> None:
    event_id = organiser.create_event()
    issue_all(event_id)
    with session_scope() as session:
        assert event_row(session, event_id).state == EventState.ISSUED


def test_tickets_record_the_ticket_version_that_signed_them(organiser: Organiser) -> None:
    event_id = organiser.create_event()
    organiser.import_orders(event_id, 4)
    with session_scope() as session:
        ids = order_ids(session, event_id)
    _issue(event_id, ids[:2])
    organiser.fake.rotate_ticket(organiser.world.oa_appid)
    store = credential_store()
    from models import CredentialKind

    store.refresh(organiser.world.oa_appid, CredentialKind.CARD_TICKET, min_validity_s=0, force=True)
    _issue(event_id, ids[2:])

    with session_scope() as session:
        versions = Counter(t.ticket_version for t in tickets_of(session, event_id))
    assert sorted(versions.items()) == [(1, 2), (2, 2)]


def test_an_unknown_event_is_refused(organiser: Organiser) -> None:
    import pytest

    with pytest.raises(events.UnknownEvent):
        _issue(987654, [1])
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Order)) == 0
