"""Fixtures for redemption tests: an event whose tickets are really held in the fake WeChat,
a live uvicorn server for concurrency over real HTTP, fast actor retries and a short WeChat
timeout.

Tickets are written straight into the database in the state a test needs (the claim flow has
its own tests in tests/claims); "claimed" tickets are also received by the world's person at the
fake, so ``code/get`` and ``code/consume`` see real user cards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from api import create_app
from cardpipe.db import session_scope
from cardpipe.services.codes import new_code
from models import Event, MiniProgram, OfficialAccount, Order, Redemption, Ticket, TicketState
from models.event import UNAMBIGUOUS_ALPHABET
from tests import waiting
from tests.conftest import ADMIN_TOKEN, GATE_TOKEN
from tests.live_server import serve
from tests.settings_env import environment
from tests.worlds import World
from workers.redemptions import consume_redeemed_code, consume_redeemed_codes, make_code_unavailable

GATE = {"Authorization": f"Bearer {GATE_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def nonce() -> str:
    return uuid.uuid4().hex


def scan(code: str, gate: str = "north-1", **extra: Any) -> dict[str, Any]:
    return {"code": code, "gate": gate, "nonce": nonce(), **extra}


@dataclass
class TicketRef:
    id: int
    code: str
    card_id: str


@dataclass
class GateEvent:
    """One event of the world's official account, bound to a card at the fake."""

    world: World
    event_id: int
    card_id: str
    order_id: int
    next_seq: int = 1

    def tickets(self, count: int, state: TicketState = TicketState.CLAIMED, code: str | None = None) -> list[TicketRef]:
        """Tickets in ``state``, in the database only (WeChat has never seen them)."""
        refs = []
        with session_scope() as session:
            for _ in range(count):
                ticket = Ticket(
                    event_id=self.event_id,
                    order_id=self.order_id,
                    seq=self.next_seq,
                    card_id=self.card_id,
                    code=code or new_code(12, UNAMBIGUOUS_ALPHABET),
                    state=state,
                )
                self.next_seq += 1
                session.add(ticket)
                session.flush()
                refs.append(TicketRef(ticket.id, ticket.code or "", self.card_id))
        return refs

    def claimed_in_wechat(self, count: int) -> list[TicketRef]:
        """Claimed tickets whose codes the world's person really holds at the fake."""
        refs = self.tickets(count)
        api_ticket = self.world.ticket()
        items = []
        for ref in refs:
            card_ext = self.world.ext(self.card_id, ticket=api_ticket, code=ref.code, outer_str=str(ref.id))
            items.append({"cardId": self.card_id, "cardExt": card_ext})
        answer = self.world.fake.add_card(self.world.person, self.world.mp_appid, items)
        assert answer["errMsg"] == "addCard:ok", answer
        return refs

    def user_card_status(self, code: str) -> str:
        holders = self.world.fake.card(self.card_id)["user_cards"]
        status: str = next(h["status"] for h in holders if h["code"] == code)
        return status

    def consume_pushes(self) -> dict[str, int]:
        """How many ``user_consume_card`` events the fake emitted, per code."""
        counts: dict[str, int] = {}
        for push in self.world.fake.pushes(self.world.oa_appid):
            if push["event"] == "user_consume_card":
                counts[push["code"]] = counts.get(push["code"], 0) + 1
        return counts


def add_event(world: World, card_id: str, name: str = "Expo") -> tuple[int, int]:
    with session_scope() as session:
        oa_id = session.scalar(select(OfficialAccount.id).where(OfficialAccount.appid == world.oa_appid))
        mp_id = session.scalar(select(MiniProgram.id).where(MiniProgram.appid == world.mp_appid))
        event = Event(name=name, official_account_id=oa_id, mini_program_id=mp_id, card_id=card_id)
        session.add(event)
        session.flush()
        order = Order(event_id=event.id, order_no=f"order-{event.id}", mp_openid="oMP-buyer", ticket_count=1)
        session.add(order)
        session.flush()
        return event.id, order.id


@pytest.fixture
def gate_event(cardpipe_world: World) -> GateEvent:
    card_id = cardpipe_world.create_card(quantity=1000, get_limit=1000)
    event_id, order_id = add_event(cardpipe_world, card_id)
    return GateEvent(cardpipe_world, event_id, card_id, order_id)


@pytest.fixture
def other_event(gate_event: GateEvent) -> GateEvent:
    """A second event of the same official account, with its own card."""
    card_id = gate_event.world.create_card(quantity=100, get_limit=100)
    event_id, order_id = add_event(gate_event.world, card_id, name="Other expo")
    return GateEvent(gate_event.world, event_id, card_id, order_id)


def redemption_rows() -> list[Redemption]:
    with session_scope() as session:
        return list(session.scalars(select(Redemption).order_by(Redemption.id)))


def ticket_state(ticket_id: int) -> str:
    with session_scope() as session:
        return session.get_one(Ticket, ticket_id).state


def set_state(ticket_id: int, state: TicketState) -> None:
    with session_scope() as session:
        session.get_one(Ticket, ticket_id).state = state


def wait_until(condition: Any, *, timeout_s: float = 60.0, what: str = "condition") -> None:
    """The shared poll, with the longer wait WeChat-outage tests need."""
    waiting.wait_until(condition, timeout_s=timeout_s, what=what)


@pytest.fixture
def fast_retries() -> Iterator[None]:
    """Retry the WeChat actors after 50–300 ms instead of 1 s–5 min."""
    saved = [
        (actor, dict(actor.options)) for actor in (consume_redeemed_code, consume_redeemed_codes, make_code_unavailable)
    ]
    for actor, _ in saved:
        actor.options.update(min_backoff=50, max_backoff=300)
    yield
    for actor, options in saved:
        actor.options.clear()
        actor.options.update(options)


@pytest.fixture
def short_wechat_timeout() -> Iterator[float]:
    """The app's WeChat calls give up after 0.5 s (so a test can make the fake slower than that)."""
    timeout_s = 0.5
    with environment(CARDPIPE_WECHAT_TIMEOUT_S=str(timeout_s)):
        yield timeout_s


@pytest.fixture
def live_api(engine: object, redis_url: str) -> Iterator[str]:
    """The real app under uvicorn on a free port, in a thread of this process."""
    with serve(create_app()) as url:
        yield url
