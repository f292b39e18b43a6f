"""The foundation end to end on the real services: the credential store (PostgreSQL + Redis)
fetches through the fake, tickets are signed and stored in PostgreSQL, and the fake's addCard
accepts exactly the cardExts WeChat would accept."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from sqlalchemy.orm import Session

from cardpipe.runtime import credential_store
from cardpipe.services.ticket_signing import sign_card_ext
from models import Event, MiniProgram, OfficialAccount, Order, Ticket, TicketState
from tests.worlds import World
from wechat.errors import TokenInvalidError
from wechat.fake import FakeWeChatControl
from wechat.signing import CardExt


def _token_fetches(fake: FakeWeChatControl, appid: str) -> int:
    return int(fake.stats()["token_fetches"].get(appid, 0))


def _stored_ticket(session: Session, world: World, card_id: str, code: str | None, seq: int = 1) -> Ticket:
    """A ticket row signed with the stored api_ticket, as pre-issue writes it."""
    account = session.query(OfficialAccount).filter_by(appid=world.oa_appid).one()
    program = session.query(MiniProgram).filter_by(appid=world.mp_appid).one()
    event = session.query(Event).filter_by(card_id=card_id).one_or_none()
    if event is None:
        event = Event(name="Expo", official_account_id=account.id, mini_program_id=program.id, card_id=card_id)
        session.add(event)
        session.flush()
    order = Order(event_id=event.id, order_no=f"O-{card_id}-{seq}", mp_openid="oMP", ticket_count=1)
    session.add(order)
    session.flush()
    ticket = Ticket(event_id=event.id, order_id=order.id, seq=1, card_id=card_id, code=code)
    session.add(ticket)
    session.flush()
    api_ticket = credential_store().card_ticket(world.oa_appid)
    signed = sign_card_ext(api_ticket=api_ticket.value, card_id=card_id, code=code, outer_str=str(ticket.id))
    ticket.card_ext, ticket.nonce, ticket.timestamp = signed.card_ext, signed.nonce, signed.timestamp
    ticket.ticket_version, ticket.state = api_ticket.version, TicketState.READY
    session.commit()
    return ticket


def _card_ext(ticket: Ticket | None) -> str:
    """The cardExt a signed ticket stores."""
    assert ticket is not None and ticket.card_ext is not None
    return ticket.card_ext


def _add(world: World, card_id: str, card_ext: str) -> dict[str, Any]:
    return world.add(card_id, card_ext)


@pytest.fixture
def card_id(cardpipe_world: World, fake: FakeWeChatControl) -> str:
    card_id = credential_store().card_api(cardpipe_world.oa_appid).card_create(cardpipe_world.card_body(quantity=50))
    fake.review_card(card_id)
    return card_id


def test_stored_ticket_is_accepted_and_its_user_get_card_names_the_ticket(
    cardpipe_world: World, card_id: str, session: Session
) -> None:
    ticket = _stored_ticket(session, cardpipe_world, card_id, "GOODCODE1")
    session.expire_all()
    stored = _card_ext(session.get(Ticket, ticket.id))
    answer = _add(cardpipe_world, card_id, stored)
    assert answer["errMsg"] == "addCard:ok", answer
    assert json.loads(stored)["outer_str"] == str(ticket.id)


def test_fake_rejects_what_wechat_rejects(
    cardpipe_world: World, card_id: str, session: Session, fake: FakeWeChatControl
) -> None:
    world = cardpipe_world
    api_ticket = credential_store().card_ticket(world.oa_appid).value
    now = int(fake.now())

    good = json.loads(_card_ext(_stored_ticket(session, world, card_id, "SIGNED01")))
    tampered = json.dumps({**good, "signature": "0" * 40})
    assert "签名错误" in _add(world, card_id, tampered)["errMsg"]

    first = CardExt(timestamp=now, nonce_str="pairnonce", code="PAIR0001").to_json(api_ticket, card_id)
    assert _add(world, card_id, first)["errMsg"] == "addCard:ok"
    reused = CardExt(timestamp=now, nonce_str="pairnonce", code="PAIR0002").to_json(api_ticket, card_id)
    assert _add(world, card_id, reused)["errcode"] != 0

    too_long = CardExt(timestamp=now, nonce_str="n-long", code="A" * 21).to_json(api_ticket, card_id)
    assert "参数错误" in _add(world, card_id, too_long)["errMsg"]

    once = CardExt(timestamp=now, nonce_str="n-once-1", code="ONCE0001").to_json(api_ticket, card_id)
    assert _add(world, card_id, once)["errMsg"] == "addCard:ok"
    twice = CardExt(timestamp=now, nonce_str="n-once-2", code="ONCE0001").to_json(api_ticket, card_id)
    assert _add(world, card_id, twice)["errcode"] != 0


def test_code_on_a_non_custom_card_is_rejected(cardpipe_world: World, fake: FakeWeChatControl) -> None:
    api = credential_store().card_api(cardpipe_world.oa_appid)
    card_id = api.card_create(cardpipe_world.card_body(use_custom_code=False))
    fake.review_card(card_id)
    api_ticket = credential_store().card_ticket(cardpipe_world.oa_appid).value
    with_code = CardExt(timestamp=int(fake.now()), nonce_str="nc1", code="NOTALLOWED").to_json(api_ticket, card_id)
    assert "参数错误" in _add(cardpipe_world, card_id, with_code)["errMsg"]


def test_expired_ticket_is_rejected_and_the_store_fetches_a_new_version(
    cardpipe_world: World, card_id: str, session: Session, fake: FakeWeChatControl
) -> None:
    old = _stored_ticket(session, cardpipe_world, card_id, "EXPIRED1")
    fake.advance_clock(7300)
    answer = _add(cardpipe_world, card_id, _card_ext(old))
    assert "签名错误" in answer["errMsg"]
    store = credential_store()
    outcome = store.refresh(cardpipe_world.oa_appid, "card_ticket", min_validity_s=0, force=True)
    assert old.ticket_version is not None
    assert outcome.rotated and outcome.credential.version == old.ticket_version + 1
    fresh = _stored_ticket(session, cardpipe_world, card_id, "FRESH001", seq=2)
    assert _add(cardpipe_world, card_id, _card_ext(fresh))["errMsg"] == "addCard:ok"


def test_concurrent_readers_cause_one_token_fetch(cardpipe_world: World, fake: FakeWeChatControl) -> None:
    store = credential_store()
    tokens: list[str] = []
    threads = [
        threading.Thread(target=lambda: tokens.append(store.access_token(cardpipe_world.oa_appid))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(tokens)) == 1
    assert _token_fetches(fake, cardpipe_world.oa_appid) == 1


def test_token_error_expires_only_the_failed_token_refreshes_once_and_never_loops(
    cardpipe_world: World, card_id: str, fake: FakeWeChatControl
) -> None:
    world = cardpipe_world
    api = credential_store().card_api(world.oa_appid)
    before = _token_fetches(fake, world.oa_appid)
    fake.invalidate_tokens(world.oa_appid)
    assert api.card_get(card_id)
    assert _token_fetches(fake, world.oa_appid) == before + 1

    fake.inject_errcode("/card/get", 40001, count=2, appid=world.oa_appid)
    with pytest.raises(TokenInvalidError):
        api.card_get(card_id)
    assert _token_fetches(fake, world.oa_appid) == before + 2

    stale = "a-token-someone-else-already-replaced"
    assert credential_store().invalidate_token(world.oa_appid, stale) is False
