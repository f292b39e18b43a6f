"""The embedded demo runs on SQLite: the same import and issue, with executemany writes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cardpipe.credentials import StoredCredential
from cardpipe.db import make_engine
from cardpipe.migrate import upgrade
from cardpipe.services import order_file, order_import
from cardpipe.services.codes import new_codes
from cardpipe.services.preissue import tracking
from cardpipe.services.preissue.issue import issue_orders
from cardpipe.services.preissue.planner import plan_preissue
from models import Event, MiniProgram, OfficialAccount, Order, Ticket, TicketState
from tests.preissue.conftest import orders_csv, signature_ok
from tests.worlds import new_world
from wechat.fake import FakeWeChatControl, FakeWeChatServer

TICKET = StoredCredential(value="sqlite-demo-api-ticket", expires_at=4_000_000_000.0, version=3)


@pytest.fixture
def sqlite_session(tmp_path: Path) -> Iterator[Session]:
    url = f"sqlite:///{tmp_path}/demo.db"
    upgrade(url)
    engine = make_engine(url)
    with Session(engine, expire_on_commit=False) as session:
        yield session
    engine.dispose()


def _event(session: Session) -> int:
    account = OfficialAccount(appid="wxdemooa01", app_secret="demo-secret", server_token="demo-token")
    session.add(account)
    session.flush()
    program = MiniProgram(appid="wxdemomp01", app_secret="demo-secret", official_account_id=account.id)
    session.add(program)
    session.flush()
    event = Event(name="Demo", official_account_id=account.id, mini_program_id=program.id, card_id="pDemoCard_1")
    session.add(event)
    session.commit()
    return event.id


def test_import_and_issue_on_sqlite(sqlite_session: Session) -> None:
    session = sqlite_session
    event_id = _event(session)
    data = orders_csv(1_200, tickets=2).encode()
    report = order_import.import_orders(session, event_id, io.BytesIO(data), order_file.ImportFormat.CSV)
    session.commit()
    again = order_import.import_orders(session, event_id, io.BytesIO(data), order_file.ImportFormat.CSV)
    session.commit()
    assert (report.inserted, again.inserted, again.unchanged) == (1_200, 0, 1_200)

    order_ids = list(session.scalars(select(Order.id).order_by(Order.id)))
    first = issue_orders(session, event_id, order_ids[:700], card_ticket=lambda _appid: TICKET)
    session.commit()
    rest = issue_orders(session, event_id, order_ids, card_ticket=lambda _appid: TICKET)
    session.commit()
    twice = issue_orders(session, event_id, order_ids, card_ticket=lambda _appid: TICKET)
    session.commit()

    assert (first.tickets_created, rest.tickets_created, twice.tickets_created) == (1_400, 1_000, 0)
    tickets = list(session.scalars(select(Ticket).where(Ticket.event_id == event_id)))
    assert len(tickets) == len({t.code for t in tickets}) == len({(t.order_id, t.seq) for t in tickets}) == 2_400
    assert all(t.state == TicketState.READY and t.ticket_version == 3 for t in tickets)
    assert all(signature_ok(TICKET.value, t.card_id, t.card_ext or "") for t in tickets[:200])
    event = session.get(Event, event_id)
    assert event is not None
    session.refresh(event)
    assert (event.tickets_issued, event.orders_complete, event.orders_total) == (2_400, 1_200, 1_200)


def test_a_colliding_code_is_redrawn_on_sqlite(sqlite_session: Session) -> None:
    session = sqlite_session
    event_id = _event(session)
    order_import.import_orders(session, event_id, io.BytesIO(orders_csv(3).encode()), order_file.ImportFormat.CSV)
    session.commit()
    order_ids = list(session.scalars(select(Order.id).order_by(Order.id)))
    issue_orders(session, event_id, order_ids[:1], card_ticket=lambda _appid: TICKET)
    session.commit()
    taken = session.scalar(select(Ticket.code))
    calls: list[int] = []

    def colliding(count: int, length: int, alphabet: str) -> list[str]:
        calls.append(count)
        return (
            [taken or "", *new_codes(count - 1, length, alphabet)]
            if len(calls) == 1
            else new_codes(count, length, alphabet)
        )

    outcome = issue_orders(session, event_id, order_ids[1:], card_ticket=lambda _appid: TICKET, draw_codes=colliding)
    session.commit()

    assert (outcome.tickets_created, outcome.codes_redrawn) == (2, 1)
    assert session.scalar(select(func.count(func.distinct(Ticket.code)))) == 3


def test_the_whole_preissue_on_sqlite_is_accepted_by_wechat(
    tmp_path: Path, fake: FakeWeChatControl, fake_server: FakeWeChatServer
) -> None:
    # Given a card at the fake WeChat and an event for it in a SQLite database
    world = new_world(fake, fake_server.url)
    card_id = world.create_card(quantity=1, get_limit=100)
    url = f"sqlite:///{tmp_path}/demo.db"
    upgrade(url)
    engine = make_engine(url)
    sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def scope() -> Iterator[Session]:
        with sessions() as session, session.begin():
            yield session

    with scope() as session:
        account = OfficialAccount(appid=world.oa_appid, app_secret=world.oa_secret, server_token="t")
        session.add(account)
        session.flush()
        program = MiniProgram(appid=world.mp_appid, app_secret=world.mp_secret, official_account_id=account.id)
        session.add(program)
        session.flush()
        event = Event(name="Demo", official_account_id=account.id, mini_program_id=program.id, card_id=card_id)
        session.add(event)
        session.flush()
        event_id = event.id
        order_import.import_orders(
            session, event_id, io.BytesIO(orders_csv(60, tickets=2).encode()), order_file.ImportFormat.CSV
        )
        tracking.start_preissue(session, event_id)

    # When the planner and its chunks run
    chunks: list[list[int]] = []
    plan = plan_preissue(
        event_id,
        sessions=scope,
        card_api=lambda _appid: world.api,
        send_chunk=lambda _e, c: chunks.append(c),
        chunk_tickets=50,
    )
    current = StoredCredential(value=world.ticket(), expires_at=4_000_000_000.0, version=1)
    for chunk in chunks:
        with scope() as session:
            issue_orders(session, event_id, chunk, card_ticket=lambda _appid: current)

    # Then the stock covers the 120 tickets, the event is issued, and WeChat accepts every ticket
    assert (plan.stock_before, plan.stock_increase, plan.chunks_sent) == (1, 119, 3)
    with scope() as session:
        progress = tracking.preissue_progress(session, event_id)
        tickets = list(session.scalars(select(Ticket).order_by(Ticket.id)))
    assert (progress.state, progress.tickets_issued, progress.orders_complete) == ("issued", 120, 60)
    answer = fake.add_card(
        world.person, world.mp_appid, [{"cardId": t.card_id, "cardExt": t.card_ext} for t in tickets[:100]]
    )
    assert answer["errMsg"] == "addCard:ok", answer
    engine.dispose()


def test_ticket_classes_are_staged_on_sqlite(sqlite_session: Session) -> None:
    session = sqlite_session
    event_id = _event(session)
    data = b"order_no,openid,ticket_count,ticket_class\nV-1,oA,1,vip\nS-1,oB,1,\n"
    order_import.import_orders(session, event_id, io.BytesIO(data), order_file.ImportFormat.CSV)
    session.commit()

    rows = session.execute(select(Order.order_no, Order.ticket_class).order_by(Order.order_no))
    assert [tuple(row) for row in rows] == [("S-1", None), ("V-1", "vip")]
