"""Bulk re-sign on PostgreSQL (set-based) and SQLite (the embedded demo): only outstanding tickets
signed by an older version, of the right account, each with a fresh nonce; running it twice
changes nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from cardpipe.db import session_scope
from cardpipe.runtime import credential_store
from cardpipe.services import resign
from models import Base, Event, MiniProgram, OfficialAccount, Order, Ticket, TicketState
from tests.credentials.conftest import Shop, open_shop
from tests.worlds import World
from wechat.fake import FakeWeChatControl
from wechat.signing import card_ext_signed_values, sha1_signature

NEW_TICKET = "new-api-ticket-value"


def _signed_by(ticket: Ticket, api_ticket: str) -> bool:
    assert ticket.card_ext is not None
    ext = json.loads(ticket.card_ext)
    signature: str = ext["signature"]
    return signature == sha1_signature(card_ext_signed_values(api_ticket, ticket.card_id, ext))


def _account_id(appid: str) -> int:
    with session_scope() as session:
        return session.scalars(select(OfficialAccount.id).where(OfficialAccount.appid == appid)).one()


def test_resign_range_rewrites_exactly_the_stale_outstanding_tickets_of_the_account(shop: Shop) -> None:
    ids = shop.issued(8)
    served, claimed, redeemed = ids[2:4], ids[4:6], ids[6:7]
    shop.set_state(served, TicketState.SERVED)
    shop.set_state(claimed, TicketState.CLAIMED)
    shop.set_state(redeemed, TicketState.REDEEMED)
    before = {t.id: t for t in shop.tickets()}
    old_version = before[ids[0]].ticket_version
    assert old_version is not None
    version = old_version + 1

    with session_scope() as session:
        count = resign.resign_range(
            session, _account_id(shop.appid), ids[0], ids[-1], api_ticket=NEW_TICKET, version=version
        )
    outstanding = [*ids[:4], ids[7]]
    assert count == len(outstanding)

    after = {t.id: t for t in shop.tickets()}
    for ticket_id in outstanding:
        ticket = after[ticket_id]
        assert ticket.ticket_version == version and _signed_by(ticket, NEW_TICKET)
        assert ticket.nonce != before[ticket_id].nonce
        assert json.loads(ticket.card_ext or "")["outer_str"] == str(ticket_id)
        assert ticket.state == before[ticket_id].state
    for ticket_id in [*claimed, *redeemed]:
        assert after[ticket_id].card_ext == before[ticket_id].card_ext

    # Twice is harmless
    with session_scope() as session:
        again = resign.resign_range(
            session, _account_id(shop.appid), ids[0], ids[-1], api_ticket=NEW_TICKET, version=version
        )
    assert again == 0
    assert {t.id: t.card_ext for t in shop.tickets()} == {t.id: t.card_ext for t in after.values()}


def test_another_accounts_tickets_are_left_alone(shop: Shop, other_shop: Shop) -> None:
    mine = shop.issued(3)
    theirs = other_shop.issued(3)
    before = {t.id: t.card_ext for t in other_shop.tickets()}
    version = (shop.tickets()[0].ticket_version or 0) + 1
    with session_scope() as session:
        count = resign.resign_range(
            session, _account_id(shop.appid), min(mine + theirs), max(mine + theirs), api_ticket="x", version=version
        )
    assert count == 3
    assert {t.id: t.card_ext for t in other_shop.tickets()} == before


def test_stale_ranges_cover_every_stale_ticket_in_chunks(shop: Shop) -> None:
    ids = shop.issued(23)
    version = (shop.tickets()[0].ticket_version or 0) + 1
    shop.set_state(ids[5:8], TicketState.CLAIMED)
    stale = [i for i in ids if i not in ids[5:8]]
    with session_scope() as session:
        ranges = resign.stale_ranges(session, _account_id(shop.appid), version, 6)
        assert resign.stale_count(session, _account_id(shop.appid), version) == 20
    assert len(ranges) == 4
    covered = [i for first, last in ranges for i in stale if first <= i <= last]
    assert covered == stale
    assert ranges[0][0] == stale[0] and ranges[-1][1] == stale[-1]


def test_resign_tickets_by_id_serves_the_claim_path(shop: Shop) -> None:
    ids = shop.issued(3)
    version = (shop.tickets()[0].ticket_version or 0) + 1
    with session_scope() as session:
        assert resign.resign_tickets(session, ids[:2], api_ticket=NEW_TICKET, version=version) == 2
    tickets = shop.tickets()
    assert [t.ticket_version == version for t in tickets] == [True, True, False]


def test_resign_on_sqlite_for_the_embedded_demo(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'demo.db'}")
    Base.metadata.create_all(engine)
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        oa = OfficialAccount(appid="wxoademo", app_secret="s", server_token="t")
        session.add(oa)
        session.flush()
        mp = MiniProgram(appid="wxmpdemo", app_secret="s", official_account_id=oa.id)
        session.add(mp)
        session.flush()
        event = Event(name="Demo", official_account_id=oa.id, mini_program_id=mp.id, card_id="pDEMO")
        session.add(event)
        session.flush()
        for seq, state in enumerate((TicketState.READY, TicketState.SERVED, TicketState.CLAIMED), start=1):
            order = Order(event_id=event.id, order_no=f"D{seq}", mp_openid="oMP", ticket_count=1)
            session.add(order)
            session.flush()
            session.add(
                Ticket(
                    event_id=event.id,
                    order_id=order.id,
                    seq=1,
                    card_id="pDEMO",
                    code=f"CODE{seq}",
                    state=state,
                    card_ext="{}",
                    ticket_version=1,
                    nonce="old",
                    timestamp=1,
                    signed_at=now,
                )
            )
        oa_id = oa.id
    with Session(engine) as session, session.begin():
        ranges = resign.stale_ranges(session, oa_id, 2, 100)
        assert resign.resign_range(session, oa_id, *ranges[0], api_ticket=NEW_TICKET, version=2) == 2
    with Session(engine) as session:
        tickets = list(session.scalars(select(Ticket).order_by(Ticket.id)))
    assert [t.ticket_version for t in tickets] == [2, 2, 1]
    assert all(_signed_by(t, NEW_TICKET) for t in tickets[:2])


def test_a_served_ticket_re_signed_after_rotation_is_accepted_by_addcard(
    cardpipe_world: World, fake: FakeWeChatControl
) -> None:
    shop = open_shop(cardpipe_world, fake)
    ids = shop.issued(1)
    store = credential_store()
    fake.rotate_ticket(shop.appid, grace_s=0)
    assert "签名错误" in shop.add_card(shop.tickets(ids)[0])["errMsg"]
    current = store.refresh(shop.appid, "card_ticket", min_validity_s=0, force=True).credential
    with session_scope() as session:
        resign.resign_tickets(session, ids, api_ticket=current.value, version=current.version)
    assert shop.add_card(shop.tickets(ids)[0])["errMsg"] == "addCard:ok"
