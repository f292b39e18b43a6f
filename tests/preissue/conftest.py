"""Fixtures for pre-issue: an official account and mini program registered both at the fake WeChat
and in cardpipe's database, events whose cards live in the fake, and order files to import."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from cardpipe import runtime
from cardpipe.db import session_scope
from cardpipe.runtime import credential_store
from cardpipe.services import accounts, events, order_file, order_import
from models import CodeMode, Event, Order, Ticket
from tests.worlds import World, new_world
from wechat.fake import FakeWeChatControl, FakeWeChatServer
from wechat.signing import card_ext_signed_values, sha1_signature


def base_info(**overrides: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "logo_url": "http://mmbiz.qpic.cn/mmbiz/logo/0",
        "brand_name": "Cardpipe Live",
        "title": "入场券",
        "color": "Color010",
        "notice": "Show the QR code at the gate",
        "description": "One entry per ticket.",
        "date_info": {"type": "DATE_TYPE_FIX_TERM", "fixed_term": 90, "fixed_begin_term": 0},
        "get_limit": 100,
    }
    info.update(overrides)
    return info


def card_spec(**overrides: Any) -> events.CardSpec:
    return events.CardSpec(card_type="MEETING_TICKET", base_info=base_info(**overrides), meeting_detail="Hall A")


@dataclass
class Organiser:
    """One OA + MP at the fake and in cardpipe, and helpers to make events and import orders."""

    world: World
    fake: FakeWeChatControl

    def create_event(
        self,
        *,
        mode: CodeMode = CodeMode.CUSTOM,
        approve: bool = True,
        policy: events.CodePolicy | None = None,
        **base_overrides: Any,
    ) -> int:
        data = events.EventInput(
            name=f"event-{uuid.uuid4().hex[:6]}",
            oa_appid=self.world.oa_appid,
            mp_appid=self.world.mp_appid,
            card_spec=card_spec(**base_overrides),
            code_mode=mode,
            code_policy=policy or events.CodePolicy(),
        )
        with session_scope() as session:
            event = events.create_event(session, data, card_api=credential_store().card_api(self.world.oa_appid))
            event_id, card_id = event.id, event.card_id
        if approve:
            assert card_id is not None
            self.fake.review_card(card_id)
        return event_id

    def import_csv(self, event_id: int, text: str, **options: Any) -> order_import.ImportReport:
        with session_scope() as session:
            return order_import.import_orders(
                session, event_id, io.BytesIO(text.encode()), order_file.ImportFormat.CSV, **options
            )

    def import_orders(self, event_id: int, count: int, *, tickets: int = 1, start: int = 0) -> None:
        self.import_csv(event_id, orders_csv(count, tickets=tickets, start=start))


def orders_csv(count: int, *, tickets: int = 1, start: int = 0, unionid: bool = True) -> str:
    lines = ["order_no,openid,unionid,ticket_count"]
    for n in range(start, start + count):
        lines.append(f"NO-{n:07d},oMP{n:012d},{'oU' + format(n, '012d') if unionid else ''},{tickets}")
    return "\n".join(lines) + "\n"


def orders_jsonl(count: int, *, tickets: int = 1) -> str:
    return "".join(
        json.dumps({"order_no": f"NO-{n:07d}", "openid": f"oMP{n:012d}", "ticket_count": tickets}) + "\n"
        for n in range(count)
    )


def order_ids(session: Session, event_id: int) -> list[int]:
    return list(session.scalars(select(Order.id).where(Order.event_id == event_id).order_by(Order.id)))


def tickets_of(session: Session, event_id: int) -> list[Ticket]:
    return list(session.scalars(select(Ticket).where(Ticket.event_id == event_id).order_by(Ticket.id)))


def signature_ok(api_ticket: str, card_id: str, card_ext: str) -> bool:
    ext = json.loads(card_ext)
    signature: str = ext["signature"]
    return sha1_signature(card_ext_signed_values(api_ticket, card_id, ext)) == signature


def event_row(session: Session, event_id: int) -> Event:
    event = session.get(Event, event_id)
    assert event is not None
    session.refresh(event)
    return event


@pytest.fixture
def organiser(engine: Engine, redis_url: str, fake: FakeWeChatControl, fake_server: FakeWeChatServer) -> Organiser:
    runtime.reset()
    world = new_world(fake, fake_server.url)
    with session_scope() as session:
        accounts.upsert_official_account(
            session,
            accounts.OfficialAccountInput(
                appid=world.oa_appid,
                app_secret=world.oa_secret,
                server_token=world.server_token,
                encoding_aes_key=world.aes_key,
                original_id=f"gh_{world.oa_appid[4:]}",
            ),
        )
        accounts.upsert_mini_program(session, world.mp_appid, world.mp_secret, world.oa_appid)
    return Organiser(world, fake)


IssueAll = Callable[[int], None]


@pytest.fixture
def issue_all(organiser: Organiser) -> Iterator[IssueAll]:
    """Run the planner and every chunk in this process (no queue)."""
    from cardpipe.services.preissue import tracking
    from cardpipe.services.preissue.issue import issue_orders
    from cardpipe.services.preissue.planner import plan_preissue

    def run(event_id: int) -> None:
        chunks: list[list[int]] = []
        with session_scope() as session:
            tracking.start_preissue(session, event_id)
        plan_preissue(
            event_id,
            sessions=session_scope,
            card_api=credential_store().card_api,
            send_chunk=lambda _event, ids: chunks.append(ids),
            chunk_tickets=500,
        )
        for ids in chunks:
            with session_scope() as session:
                issue_orders(session, event_id, ids, card_ticket=credential_store().card_ticket)

    yield run
