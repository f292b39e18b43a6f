"""An event as an organiser sets it up before launch: accounts at the fake WeChat and in cardpipe,
a card created through cardpipe and audited (the audit push reaching the real app), orders with
unionids (one buyer holds three tickets), pre-issue done by in-process workers, a scheduler lease,
and one tester's login through the Mini Program. ``Setup.check()`` runs the readiness check."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dramatiq
import pytest
import requests
from sqlalchemy import select

from api import create_app
from cardpipe.db import session_scope
from cardpipe.routes.readiness import ports
from cardpipe.runtime import credential_store, redis_client
from cardpipe.services import events
from cardpipe.services.preissue import tracking
from cardpipe.services.readiness import checks, signals
from cardpipe.services.readiness.report import Item, Report
from models import Event, Order
from tests.live_server import serve
from tests.waiting import wait_until
from tests.worlds import World
from wechat.fake import FakeWeChatControl, FakeWeChatServer
from workers.preissue import plan_preissue

BUYER_TICKETS = (3, 1, 1)


@pytest.fixture(scope="session")
def api_url(database_url: str, fake_server: FakeWeChatServer) -> Iterator[str]:
    with serve(create_app()) as url:
        yield url


def card_spec(now: int, **base_info: Any) -> events.CardSpec:
    info = {
        "logo_url": "http://mmbiz.qpic.cn/mmbiz/logo/0",
        "brand_name": "Cardpipe Live",
        "title": "入场券",
        "color": "Color010",
        "notice": "Show the QR code at the gate",
        "description": "One entry.",
        "date_info": {
            "type": "DATE_TYPE_FIX_TIME_RANGE",
            "begin_timestamp": now - 3600,
            "end_timestamp": now + 30 * 86400,
        },
        "get_limit": 5,
        **base_info,
    }
    return events.CardSpec(card_type="MEETING_TICKET", meeting_detail="Hall A", base_info=info)


@dataclass
class Setup:
    world: World
    fake: FakeWeChatControl
    api: str
    event_id: int = 0
    card_id: str = ""

    def check(self) -> Report:
        with session_scope() as session:
            return checks.check_event(session, ports(), self.event_id)

    def item(self, key: str) -> Item:
        return self.check().item(key)

    def point_pushes_at_the_app(self, *, safe_mode: bool = False) -> None:
        w = self.world
        self.fake.register_oa(
            w.oa_appid,
            w.oa_secret,
            w.server_token,
            encoding_aes_key=w.aes_key,
            push_url=f"{self.api}/wechat/{w.oa_appid}/events",
            safe_mode=safe_mode,
            original_id=w.original_id,
        )

    def create_event(self, **base_info: Any) -> None:
        w = self.world
        data = events.EventInput(
            name="Expo", oa_appid=w.oa_appid, mp_appid=w.mp_appid, card_spec=card_spec(int(time.time()), **base_info)
        )
        with session_scope() as session:
            event = events.create_event(session, data, card_api=credential_store().card_api(w.oa_appid))
            self.event_id, self.card_id = event.id, str(event.card_id)

    def audit(self) -> None:
        self.fake.review_card(self.card_id)
        wait_until(lambda: self.event().card_status == "CARD_STATUS_VERIFY_OK", what="card_pass_check applied")

    def import_orders(self) -> None:
        with session_scope() as session:
            for index, tickets in enumerate(BUYER_TICKETS):
                person = f"buyer-{uuid.uuid4().hex[:10]}"
                self.fake.add_person(person)
                view = self.fake.person(person)
                order = Order(
                    event_id=self.event_id,
                    order_no=f"NO-{index}-{uuid.uuid4().hex[:6]}",
                    mp_openid=view["openids"][self.world.mp_appid],
                    unionid=view["unionid"],
                    ticket_count=tickets,
                )
                session.add(order)
            event = session.get_one(Event, self.event_id)
            event.orders_total, event.tickets_total = len(BUYER_TICKETS), sum(BUYER_TICKETS)

    def preissue(self) -> None:
        with session_scope() as session:
            tracking.start_preissue(session, self.event_id)
        plan_preissue.send(self.event_id)
        wait_until(lambda: self.event().state == "issued", what="pre-issue done")

    def login(self) -> requests.Response:
        code = self.fake.login(self.world.person, self.world.mp_appid)
        return requests.post(f"{self.api}/v1/sessions", json={"code": code, "appid": self.world.mp_appid}, timeout=10)

    def lead(self) -> None:
        redis_client().set(signals.LEADER_LEASE_KEY, "test-host:1:leader", px=60_000)

    def event(self) -> Event:
        with session_scope() as session:
            return session.get_one(Event, self.event_id)

    def orders(self) -> list[Order]:
        with session_scope() as session:
            return list(session.scalars(select(Order).where(Order.event_id == self.event_id)))


@pytest.fixture
def setup(cardpipe_world: World, fake: FakeWeChatControl, api_url: str, broker_worker: dramatiq.Worker) -> Setup:
    """Accounts registered, pushes aimed at the app, a scheduler leading; no event yet."""
    result = Setup(cardpipe_world, fake, api_url)
    result.point_pushes_at_the_app()
    result.lead()
    return result


@pytest.fixture
def ready(setup: Setup) -> Setup:
    """A whole event ready to launch."""
    setup.create_event()
    setup.audit()
    setup.import_orders()
    setup.preissue()
    assert setup.login().status_code == 200
    return setup
