"""Fixtures for the claim flow: the real app under uvicorn, an event whose card lives in the fake
WeChat with pushes aimed at that app, in-process workers, and buyers who log in through the fake.
Tickets are pre-issued by the service's ``issue_orders``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import pytest
import requests
from sqlalchemy import func, select

from api import create_app
from cardpipe.db import session_scope
from cardpipe.runtime import credential_store
from cardpipe.services.preissue.issue import issue_orders
from models import Event, InboxItem, MiniProgram, OfficialAccount, Order, Ticket, TicketState
from tests.live_server import serve
from tests.waiting import wait_until
from tests.worlds import World
from wechat.fake import FakeWeChatControl, FakeWeChatServer


@pytest.fixture(scope="session")
def api_url(database_url: str, fake_server: FakeWeChatServer) -> Iterator[str]:
    """The app under uvicorn for the whole run (settings come from the environment the session
    fixtures set up: the test database, the test Redis, the fake WeChat)."""
    with serve(create_app()) as url:
        yield url


@dataclass
class Buyer:
    person: str
    mp_openid: str
    order_no: str
    order_id: int
    token: str = ""


@dataclass
class Launch:
    """One event at launch: its world (OA + MP at the fake and in our database), its card, and
    helpers that act as buyers' mini programs over real HTTP."""

    world: World
    fake: FakeWeChatControl
    api: str
    event_id: int
    card_id: str
    http: requests.Session = field(default_factory=requests.Session)

    # --- set-up -------------------------------------------------------------------------

    def buyer(self, *, tickets: int = 1, issue: bool = True, order_no: str | None = None) -> Buyer:
        person = f"buyer-{uuid.uuid4().hex[:12]}"
        self.fake.add_person(person)
        return self._order(person, self.fake.openid(person, self.world.mp_appid), tickets, issue, order_no)

    def another_order(self, buyer: Buyer, *, tickets: int = 1, issue: bool = True) -> Buyer:
        """A further order of the same person (same session token)."""
        order = self._order(buyer.person, buyer.mp_openid, tickets, issue, None)
        order.token = buyer.token
        return order

    def _order(self, person: str, mp_openid: str, tickets: int, issue: bool, order_no: str | None) -> Buyer:
        with session_scope() as session:
            order = Order(
                event_id=self.event_id,
                order_no=order_no or f"NO-{uuid.uuid4().hex[:10]}",
                mp_openid=mp_openid,
                ticket_count=tickets,
            )
            session.add(order)
            session.flush()
            buyer = Buyer(person, mp_openid, order.order_no, order.id)
        if issue:
            self.issue([buyer.order_id])
        return buyer

    def issue(self, order_ids: list[int]) -> None:
        """Pre-issue the orders' tickets (``issue_orders``: signed, ``ready``)."""
        with session_scope() as session:
            issue_orders(session, self.event_id, order_ids, card_ticket=credential_store().card_ticket)

    # --- the mini program ---------------------------------------------------------------

    def login(self, buyer: Buyer) -> str:
        code = self.fake.login(buyer.person, self.world.mp_appid)
        response = self.http.post(f"{self.api}/v1/sessions", json={"code": code, "appid": self.world.mp_appid})
        assert response.status_code == 200, response.text
        buyer.token = response.json()["token"]
        return buyer.token

    def auth(self, buyer: Buyer) -> dict[str, str]:
        return {"Authorization": f"Bearer {buyer.token}"}

    def poll(self, buyer: Buyer, *, etag: str | None = None, order_no: str | None = None) -> requests.Response:
        headers = self.auth(buyer) | ({"If-None-Match": etag} if etag else {})
        return self.http.get(f"{self.api}/v1/orders/{order_no or buyer.order_no}/claim", headers=headers)

    def ready_card_list(self, buyer: Buyer) -> list[dict[str, str]]:
        response = self.poll(buyer)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "ready", body
        return list(body["cardList"])

    def add_card(self, buyer: Buyer, card_list: list[dict[str, str]], *, cancel: bool = False) -> dict[str, Any]:
        return self.fake.add_card(buyer.person, self.world.mp_appid, card_list, cancel=cancel)

    def post_result(self, buyer: Buyer, result: dict[str, Any]) -> requests.Response:
        body = {k: v for k, v in result.items() if k in ("errMsg", "cardList")}
        return self.http.post(
            f"{self.api}/v1/orders/{buyer.order_no}/claim/result", json=body, headers=self.auth(buyer)
        )

    # --- what happened ------------------------------------------------------------------

    def tickets(self, buyer: Buyer) -> list[Ticket]:
        with session_scope() as session:
            return list(session.scalars(select(Ticket).where(Ticket.order_id == buyer.order_id).order_by(Ticket.seq)))

    def event(self) -> Event:
        with session_scope() as session:
            return session.get_one(Event, self.event_id)

    def settled(self, buyer: Buyer) -> bool:
        """Every ticket claimed and confirmed by both signals."""
        tickets = self.tickets(buyer)
        return all(t.state == TicketState.CLAIMED and t.confirmed_by_client and t.confirmed_by_wechat for t in tickets)


def inbox_rows(source: str | None = None) -> list[InboxItem]:
    with session_scope() as session:
        query = select(InboxItem).order_by(InboxItem.id)
        if source is not None:
            query = query.where(InboxItem.source == source)
        return list(session.scalars(query))


def drain(worker: dramatiq.Worker) -> None:
    """Wait until every stored push and client result is applied (here, besides the worker's own
    inbox drain), the claims and events queues are empty and nothing is in flight."""
    from workers.broker import broker
    from workers.inbox_drain import DRAIN_ATTEMPTS, drain_once

    def inbox_applied() -> bool:
        drain_once()
        with session_scope() as session:
            return not session.scalar(
                select(func.count()).where(
                    InboxItem.processed_at.is_(None),
                    InboxItem.attempts < DRAIN_ATTEMPTS,
                )
            )

    wait_until(inbox_applied, what="stored pushes and results applied")
    for queue in ("events", "claims"):
        broker.join(queue, timeout=30_000)
    worker.join()


def make_launch(world: World, fake: FakeWeChatControl, api: str, *, safe_mode: bool = False) -> Launch:
    fake.register_oa(
        world.oa_appid,
        world.oa_secret,
        world.server_token,
        encoding_aes_key=world.aes_key,
        push_url=f"{api}/wechat/{world.oa_appid}/events",
        safe_mode=safe_mode,
        original_id=world.original_id,
    )
    card_id = world.create_card(approve=False, quantity=5000, get_limit=50)
    with session_scope() as session:
        oa_id = session.scalar(select(OfficialAccount.id).where(OfficialAccount.appid == world.oa_appid))
        mp_id = session.scalar(select(MiniProgram.id).where(MiniProgram.appid == world.mp_appid))
        event = Event(name="Launch", official_account_id=oa_id, mini_program_id=mp_id, card_id=card_id, state="issued")
        session.add(event)
        session.flush()
        event_id = event.id
    return Launch(world=world, fake=fake, api=api, event_id=event_id, card_id=card_id)


@pytest.fixture
def launch(
    cardpipe_world: World, fake: FakeWeChatControl, api_url: str, broker_worker: dramatiq.Worker
) -> Iterator[Launch]:
    """An event whose card is audited (through a real ``card_pass_check`` push) and ready."""
    launch = make_launch(cardpipe_world, fake, api_url)
    fake.review_card(launch.card_id)
    wait_until(lambda: launch.event().card_status == "CARD_STATUS_VERIFY_OK", what="card_pass_check applied")
    yield launch
    launch.http.close()
