"""The embedded demo runs on SQLite: no row locks there, the guarded UPDATE decides instead."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cardpipe.db import make_engine
from cardpipe.migrate import upgrade
from cardpipe.services.checkin import gates, lists, offline_sync
from cardpipe.services.redemptions import NonceInFlight, redeem
from cardpipe.services.scan_answers import Answer, Scan
from models import (
    Direction,
    Event,
    MiniProgram,
    OfficialAccount,
    Order,
    Presence,
    Redemption,
    RedemptionResult,
    Ticket,
    TicketState,
)

CODE = "ABCDEFGH2345"


def _sqlite_sessions(tmp_path: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    upgrade(url)
    sessions = sessionmaker(make_engine(url), expire_on_commit=False)
    with sessions.begin() as session:
        oa = OfficialAccount(appid="wxoa1", app_secret="oa-secret-1", server_token="token")
        session.add(oa)
        session.flush()
        mp = MiniProgram(appid="wxmp1", app_secret="mp-secret-1", official_account_id=oa.id)
        session.add(mp)
        session.flush()
        event = Event(name="demo", official_account_id=oa.id, mini_program_id=mp.id, card_id="pCARD")
        session.add(event)
        session.flush()
        order = Order(event_id=event.id, order_no="1", mp_openid="oMP", ticket_count=1)
        session.add(order)
        session.flush()
        session.add(Ticket(event_id=event.id, order_id=order.id, seq=1, card_id="pCARD", code=CODE, state="claimed"))
    return sessions


def _redeem(sessions: sessionmaker[Session], scan: Scan) -> Answer:
    try:
        with sessions.begin() as session:
            return redeem(session, scan)
    except NonceInFlight:
        with sessions.begin() as session:
            return redeem(session, scan)


def test_racing_gates_on_sqlite_let_exactly_one_in(tmp_path: Path) -> None:
    sessions = _sqlite_sessions(tmp_path)
    start = threading.Barrier(20)

    def scan(gate: int) -> RedemptionResult:
        start.wait()
        return _redeem(sessions, Scan(CODE, f"gate-{gate}", uuid.uuid4().hex)).result

    with ThreadPoolExecutor(20) as pool:
        results = Counter(pool.map(scan, range(20)))

    assert results == {RedemptionResult.OK: 1, RedemptionResult.ALREADY_REDEEMED: 19}
    with sessions() as session:
        assert session.scalar(select(Ticket.state)) == TicketState.REDEEMED
        assert session.scalar(select(func.count()).select_from(Redemption)) == 20


def test_one_nonce_retried_at_once_on_sqlite_is_one_answer(tmp_path: Path) -> None:
    sessions = _sqlite_sessions(tmp_path)
    start = threading.Barrier(10)
    same = Scan(CODE, "gate-1", uuid.uuid4().hex)

    def scan(_: int) -> tuple[RedemptionResult, bool]:
        start.wait()
        answer = _redeem(sessions, same)
        return answer.result, answer.replayed

    with ThreadPoolExecutor(10) as pool:
        answers = Counter(pool.map(scan, range(10)))

    assert answers == {(RedemptionResult.OK, False): 1, (RedemptionResult.OK, True): 9}


def test_an_offline_upload_merges_on_sqlite_and_a_second_upload_is_all_duplicates(tmp_path: Path) -> None:
    sessions = _sqlite_sessions(tmp_path)
    with sessions.begin() as session:
        event_id = session.scalar(select(Event.id))
        assert event_id is not None
        main = lists.create_list(session, event_id, lists.ListSettings("main"))
        gate = gates.gate_for_token(session, gates.add_gate(session, event_id, main.id, "offline").token)
    assert gate is not None
    at = datetime.now(UTC) - timedelta(minutes=5)
    batch = [
        offline_sync.OfflineScan(uuid.uuid4().hex, CODE, Direction.ENTRY, at, RedemptionResult.OK),
        offline_sync.OfflineScan(
            uuid.uuid4().hex, CODE, Direction.ENTRY, at + timedelta(seconds=1), RedemptionResult.OK
        ),
    ]

    with sessions.begin() as session:
        first = offline_sync.merge(session, gate, batch)
    with sessions.begin() as session:
        again = offline_sync.merge(session, gate, batch)

    assert (first.recorded, first.conflicts, len(first.consumes)) == (2, 1, 1)
    assert (again.recorded, again.duplicates, again.consumes) == (0, 2, [])
    with sessions() as session:
        assert session.scalar(select(Ticket.state)) == TicketState.REDEEMED
        assert session.scalar(select(Presence.entries)) == 2
        assert session.scalar(select(Redemption.id).where(Redemption.consume_sync == "pending")) == first.consumes[0]
