"""Fixtures for credentials, quotas, rotation and the scheduler: events whose card lives in the
fake WeChat, tickets pre-issued by ``issue_orders``, and settings overrides that reach
both this process and the subprocesses it starts (through the environment)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from cardpipe.db import session_scope
from cardpipe.runtime import credential_store
from cardpipe.services import accounts
from cardpipe.services.preissue.issue import issue_orders
from models import Event, MiniProgram, OfficialAccount, Order, Ticket, TicketState
from tests.settings_env import rebuild_settings
from tests.worlds import MakeWorld, World
from wechat.fake import FakeWeChatControl

Override = Callable[..., None]
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def override_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Override]:
    """``override_settings(wechat_calls_per_s=5, …)`` sets ``CARDPIPE_*`` for this process and
    any subprocess, and rebuilds the shared clients; everything is restored after the test."""

    def override(**values: Any) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"CARDPIPE_{name.upper()}", str(value))
        rebuild_settings()

    yield override
    monkeypatch.undo()
    rebuild_settings()


def token_fetches(fake: FakeWeChatControl, appid: str) -> int:
    return int(fake.stats()["token_fetches"].get(appid, 0))


def calls(fake: FakeWeChatControl, appid: str, endpoint: str) -> int:
    return int(fake.stats()["calls_by_appid"].get(appid, {}).get(endpoint, 0))


@dataclass
class Shop:
    """One event of a world: its card at the fake (created and audited through cardpipe's own
    credential store) and helpers to import orders and pre-issue their tickets."""

    world: World
    fake: FakeWeChatControl
    event_id: int
    card_id: str

    @property
    def appid(self) -> str:
        return self.world.oa_appid

    def orders(self, count: int, *, tickets: int = 1) -> list[int]:
        tag = uuid.uuid4().hex[:8]
        rows = [
            {"event_id": self.event_id, "order_no": f"N{tag}-{i}", "mp_openid": "oMP", "ticket_count": tickets}
            for i in range(count)
        ]
        with session_scope() as session:
            return list(session.scalars(insert(Order).returning(Order.id, sort_by_parameter_order=True), rows))

    def issue(self, order_ids: list[int]) -> None:
        with session_scope() as session:
            issue_orders(session, self.event_id, order_ids, card_ticket=credential_store().card_ticket)

    def issued(self, count: int) -> list[int]:
        """``count`` one-ticket orders, pre-issued: their ticket ids (``ready``)."""
        order_ids = self.orders(count)
        self.issue(order_ids)
        with session_scope() as session:
            return list(session.scalars(select(Ticket.id).where(Ticket.order_id.in_(order_ids)).order_by(Ticket.id)))

    def ticket_ids(self, *states: TicketState) -> list[int]:
        query = select(Ticket.id).where(Ticket.event_id == self.event_id).order_by(Ticket.id)
        if states:
            query = query.where(Ticket.state.in_(states))
        with session_scope() as session:
            return list(session.scalars(query))

    def tickets(self, ids: list[int] | None = None) -> list[Ticket]:
        query = select(Ticket).where(Ticket.event_id == self.event_id).order_by(Ticket.id)
        if ids is not None:
            query = query.where(Ticket.id.in_(ids))
        with session_scope() as session:
            return list(session.scalars(query))

    def set_state(self, ids: list[int], state: TicketState, **values: Any) -> None:
        with session_scope() as session:
            session.execute(update(Ticket).where(Ticket.id.in_(ids)).values(state=state, **values))

    def add_card(self, ticket: Ticket, person: str | None = None) -> dict[str, Any]:
        """A person takes the ticket's payload to ``wx.addCard`` at the fake."""
        assert ticket.card_ext is not None
        person = person or self.world.person
        return self.fake.add_card(person, self.world.mp_appid, [{"cardId": ticket.card_id, "cardExt": ticket.card_ext}])

    def claimed_by_client_only(self, count: int, *, ago: timedelta = timedelta(hours=1)) -> list[int]:
        """Tickets the user received in WeChat whose push never arrived: the client reported
        them, so they are ``claimed`` but not confirmed by WeChat."""
        ids = self.issued(count)
        for ticket in self.tickets(ids):
            answer = self.add_card(ticket)
            assert answer["errMsg"] == "addCard:ok", answer
        self.set_state(ids, TicketState.CLAIMED, confirmed_by_client=True, claimed_at=datetime.now(UTC) - ago)
        return ids


def open_shop(world: World, fake: FakeWeChatControl, *, quantity: int = 5000, get_limit: int = 1000) -> Shop:
    api = credential_store().card_api(world.oa_appid)
    card_id = api.card_create(world.card_body(quantity=quantity, get_limit=get_limit))
    fake.review_card(card_id)
    with session_scope() as session:
        oa_id = session.scalar(select(OfficialAccount.id).where(OfficialAccount.appid == world.oa_appid))
        mp_id = session.scalar(select(MiniProgram.id).where(MiniProgram.appid == world.mp_appid))
        event = Event(name="Launch", official_account_id=oa_id, mini_program_id=mp_id, card_id=card_id, state="issued")
        session.add(event)
        session.flush()
        event_id = event.id
    return Shop(world=world, fake=fake, event_id=event_id, card_id=card_id)


@pytest.fixture
def shop(cardpipe_world: World, fake: FakeWeChatControl) -> Shop:
    return open_shop(cardpipe_world, fake)


@pytest.fixture
def other_shop(shop: Shop, make_world: MakeWorld, fake: FakeWeChatControl) -> Shop:
    """An event of a second official account, registered like ``cardpipe_world``."""
    world = make_world()
    with session_scope() as session:
        accounts.upsert_official_account(
            session,
            accounts.OfficialAccountInput(
                appid=world.oa_appid,
                app_secret=world.oa_secret,
                server_token=world.server_token,
                original_id=world.original_id,
                use_stable_token=False,
            ),
        )
        accounts.upsert_mini_program(session, world.mp_appid, world.mp_secret, world.oa_appid)
    return open_shop(world, fake)


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """The environment for cardpipe subprocesses: this run's database, Redis, fake and keys."""
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
