"""A batch of stored pushes is applied set-based, on PostgreSQL and on the demo's SQLite alike:
the same handful of statements whatever its size, each push decided as one push applied alone
would be (claimed, noted, foreign, only stored), every row marked processed with its note and a
row's earlier error kept."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, update
from sqlalchemy.orm import Session

from cardpipe.db import make_engine
from cardpipe.migrate import upgrade
from cardpipe.services import inbox, push_effects
from models import Event, InboxItem, InboxSource, MiniProgram, OfficialAccount, Order, Ticket, TicketState
from wechat.pushes import CardEvent, OtherEvent, UserGetCard, render_event

CARD = "pBatchCard000000001"


@pytest.fixture(params=["postgresql", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgresql":
        yield request.getfixturevalue("engine")
        return
    url = f"sqlite:///{tmp_path}/demo.db"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def seed(engine: Engine, tickets: int) -> tuple[int, list[tuple[int, str]]]:
    """An official account with an event of ``CARD`` and served tickets: (account id, [(ticket id, code)])."""
    with Session(engine, expire_on_commit=False) as session:
        account = OfficialAccount(appid="wxbatchoa01", app_secret="s", server_token="t", use_stable_token=False)
        session.add(account)
        session.flush()
        program = MiniProgram(appid="wxbatchmp01", app_secret="s", official_account_id=account.id)
        session.add(program)
        session.flush()
        owner = Event(name="Batch", official_account_id=account.id, mini_program_id=program.id, card_id=CARD)
        session.add(owner)
        session.flush()
        rows = []
        for n in range(tickets):
            order = Order(event_id=owner.id, order_no=f"NO-{n}", mp_openid=f"mp-{n}", ticket_count=1)
            session.add(order)
            session.flush()
            ticket = Ticket(
                event_id=owner.id, order_id=order.id, seq=1, card_id=CARD, code=f"CODE{n:08d}", state=TicketState.SERVED
            )
            session.add(ticket)
            session.flush()
            rows.append((ticket.id, ticket.code or ""))
        session.commit()
        return account.id, rows


def got(n: int, ticket_id: int, code: str, card_id: str = CARD) -> UserGetCard:
    return UserGetCard("gh", f"oa-{n}", int(time.time()), card_id, code=code, outer_str=str(ticket_id))


def store(engine: Engine, account_id: int, events: list[CardEvent]) -> list[int]:
    with Session(engine) as session:
        ids = []
        for n, pushed in enumerate(events):
            inbox_id = inbox.store(
                session,
                source=InboxSource.WECHAT,
                kind="test",
                dedupe_key=f"test:batch:{n}",
                payload=render_event(pushed),
                official_account_id=account_id,
            )
            assert inbox_id is not None
            ids.append(inbox_id)
        session.commit()
    return ids


def apply(engine: Engine) -> tuple[push_effects.Drained, int]:
    """One batch, and how many statements it took."""
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    event.listen(engine, "before_cursor_execute", count)
    try:
        with Session(engine) as session:
            drained = push_effects.apply_pending(session, limit=100, max_attempts=3)
            session.commit()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return drained, statements


def test_each_push_of_a_batch_is_decided_as_alone_and_marked_with_its_note(db: Engine) -> None:
    # Given a claim, a view (stored only), a wrong code, a card of no event of this account, and
    # a claim whose row failed once before
    account_id, tickets = seed(db, 3)
    (first, first_code), (second, _), (third, third_code) = tickets
    viewed = OtherEvent("gh", "oa-v", int(time.time()), CARD, name="user_view_card")
    ids = store(
        db,
        account_id,
        [
            got(1, first, first_code),
            viewed,
            got(2, second, "NOTTHECODE00"),
            got(3, first, first_code, card_id="pSomeoneElsesCard01"),
            got(4, third, third_code),
        ],
    )
    with db.begin() as connection:
        connection.execute(update(InboxItem).where(InboxItem.id == ids[4]).values(attempts=1, last_error="earlier"))

    # When one batch applies them
    drained, _ = apply(db)

    # Then the claims are recorded, the others changed nothing, and every row is done with its note
    assert sorted(drained.inbox_ids) == ids and len(drained.cache_keys) == 2
    with Session(db) as session:
        states = {row.id: row.state for row in session.execute(select(Ticket.id, Ticket.state))}
        holders = {row.id: row.oa_openid for row in session.execute(select(Ticket.id, Ticket.oa_openid))}
        rows = {row.id: row for row in session.scalars(select(InboxItem))}
    assert states == {first: TicketState.CLAIMED, second: TicketState.SERVED, third: TicketState.CLAIMED}
    assert (holders[first], holders[third]) == ("oa-1", "oa-4")
    assert all(row.processed_at is not None for row in rows.values())
    notes = [rows[i].last_error for i in ids]
    assert notes[0] is None and notes[1] is None
    assert "not the ticket's code" in (notes[2] or "") and "foreign" in (notes[3] or "")
    assert notes[4] == "earlier" and rows[ids[4]].attempts == 2


def test_a_batch_takes_the_same_statements_whatever_its_size(db: Engine) -> None:
    # Given a batch of 2 claims, a view and a wrong code, then one of 40 claims, a view and 10
    # wrong codes
    account_id, tickets = seed(db, 42)
    viewed = OtherEvent("gh", "oa-v", int(time.time()), CARD, name="user_view_card")
    small = [got(n, *ticket) for n, ticket in enumerate(tickets[:2])]
    large = [got(n, *ticket) for n, ticket in enumerate(tickets[2:], start=2)]
    wrong = [got(n, ticket_id, "NOTTHECODE00") for n, (ticket_id, _) in enumerate(tickets[:10], start=100)]

    store(db, account_id, [*small, viewed, wrong[0]])
    few_drained, few = apply(db)
    with db.begin() as connection:
        connection.execute(update(InboxItem).values(dedupe_key="done:" + InboxItem.dedupe_key))
    store(db, account_id, [*large, viewed, *wrong])
    many_drained, many = apply(db)

    # Then both took the same statements, and every claim is recorded
    assert (len(few_drained.inbox_ids), len(many_drained.inbox_ids)) == (4, 51)
    assert few == many
    with Session(db) as session:
        assert set(session.scalars(select(Ticket.state))) == {TicketState.CLAIMED}
