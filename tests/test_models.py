"""The invariants live in the database itself: unique keys, checks, secrets encrypted at rest."""

from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cardpipe.migrate import alembic_config, upgrade
from models import (
    Credential,
    CredentialKind,
    Event,
    InboxItem,
    MiniProgram,
    OfficialAccount,
    Order,
    Redemption,
    Ticket,
)


def _event(session: Session) -> Event:
    oa = OfficialAccount(appid="wxoa", app_secret="oa-secret-value", server_token="srv-token-value")
    session.add(oa)
    session.flush()
    mp = MiniProgram(appid="wxmp", app_secret="mp-secret-value", official_account_id=oa.id)
    session.add(mp)
    session.flush()
    event = Event(name="Expo", official_account_id=oa.id, mini_program_id=mp.id, card_id="pCARD")
    session.add(event)
    session.flush()
    return event


def _order(session: Session, event: Event, order_no: str = "A1") -> Order:
    order = Order(event_id=event.id, order_no=order_no, mp_openid="oMP", ticket_count=2)
    session.add(order)
    session.flush()
    return order


def _assert_rejected(session: Session, row: object) -> None:
    with session.begin_nested():
        session.add(row)
        with pytest.raises(IntegrityError):
            session.flush()


def test_one_ticket_per_order_and_seq(session: Session) -> None:
    event = _event(session)
    order = _order(session, event)
    session.add(Ticket(event_id=event.id, order_id=order.id, seq=1, card_id="pCARD", code="AAA"))
    session.flush()
    _assert_rejected(session, Ticket(event_id=event.id, order_id=order.id, seq=1, card_id="pCARD", code="BBB"))


def test_one_code_per_card(session: Session) -> None:
    event = _event(session)
    order = _order(session, event)
    session.add(Ticket(event_id=event.id, order_id=order.id, seq=1, card_id="pCARD", code="AAA"))
    session.flush()
    _assert_rejected(session, Ticket(event_id=event.id, order_id=order.id, seq=2, card_id="pCARD", code="AAA"))


def test_order_no_unique_per_event_and_count_positive(session: Session) -> None:
    event = _event(session)
    _order(session, event)
    _assert_rejected(session, Order(event_id=event.id, order_no="A1", mp_openid="x", ticket_count=1))
    _assert_rejected(session, Order(event_id=event.id, order_no="A2", mp_openid="x", ticket_count=0))


def test_ticket_state_is_checked(session: Session) -> None:
    event = _event(session)
    order = _order(session, event)
    _assert_rejected(session, Ticket(event_id=event.id, order_id=order.id, seq=1, card_id="p", state="lost"))


def test_one_inbox_row_per_dedupe_key_and_one_redemption_per_nonce(session: Session) -> None:
    session.add(InboxItem(source="wechat", kind="user_get_card", dedupe_key="k1", payload="<xml/>"))
    session.flush()
    _assert_rejected(session, InboxItem(source="wechat", kind="user_get_card", dedupe_key="k1", payload="x"))
    session.add(Redemption(nonce="n1", code="C", gate="g1", result="ok"))
    session.flush()
    _assert_rejected(session, Redemption(nonce="n1", code="C", gate="g2", result="ok"))


def test_secrets_are_encrypted_at_rest(session: Session) -> None:
    event = _event(session)
    session.add(
        Credential(
            official_account_id=event.official_account_id,
            kind=CredentialKind.CARD_TICKET,
            value="ticket-plain-value",
            expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        )
    )
    session.commit()
    raw = session.execute(
        text(
            "SELECT oa.app_secret || oa.server_token || mp.app_secret || c.value "
            "FROM official_accounts oa JOIN mini_programs mp ON mp.official_account_id = oa.id "
            "JOIN credentials c ON c.official_account_id = oa.id"
        )
    ).scalar_one()
    for plain in ("oa-secret-value", "srv-token-value", "mp-secret-value", "ticket-plain-value"):
        assert plain not in raw
    session.expire_all()
    assert session.scalars(select(OfficialAccount)).one().app_secret == "oa-secret-value"
    credential = session.scalars(select(Credential)).one()
    assert credential.value == "ticket-plain-value"
    assert credential.expires_at.tzinfo is not None


def test_migrations_run_on_sqlite_and_match_the_models(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    upgrade(url)
    command.check(alembic_config(url))


def test_migrations_match_the_models_on_postgresql(engine: Engine, database_url: str) -> None:
    command.check(alembic_config(database_url))
