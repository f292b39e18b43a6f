"""What the ops charts and alerts read, recorded where it happens: WeChat errcodes per account,
a credential fetch failing (and since when), a credential's last rotation, the card stock the
pre-issue planner left, and when WeChat confirmed a claim."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from api import create_app
from cardpipe.credentials import refresh_failing_key
from cardpipe.db import session_scope
from cardpipe.runtime import credential_store, redis_client
from cardpipe.services.claims import Signal, confirm_claim
from cardpipe.services.preissue.planner import plan_preissue
from models import Credential, CredentialKind, Event, OfficialAccount, Ticket, TicketState
from tests.conftest import ADMIN_TOKEN
from tests.credentials.conftest import Shop
from wechat.errors import BusinessError, ConfigurationError, MinuteQuotaError
from wechat.fake import FakeWeChatControl


def _metrics() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with TestClient(create_app()) as client:
        text = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_every_errcode_wechat_answers_is_counted_per_account(shop: Shop, fake: FakeWeChatControl) -> None:
    api = credential_store().card_api(shop.appid)
    with pytest.raises(BusinessError):
        api.code_get(shop.card_id, "NOSUCHCODE")
    fake.inject_errcode("/card/get", 45011, appid=shop.appid, count=1)
    with pytest.raises(MinuteQuotaError):
        api.card_get(shop.card_id)
    counters = credential_store().guard.status(shop.appid).counters
    assert (counters["errcode_40056"], counters["errcode_45011"]) == (1, 1)
    assert _metrics()[("cardpipe_wechat_errors_total", (("appid", shop.appid), ("errcode", "40056")))] == 1


def test_a_failing_fetch_is_timed_until_one_succeeds(shop: Shop, fake: FakeWeChatControl) -> None:
    store = credential_store()
    redis = redis_client()
    key = refresh_failing_key(shop.appid, CredentialKind.ACCESS_TOKEN)
    fake.inject_errcode("/cgi-bin/token", 40164, appid=shop.appid, count=2)
    for _ in range(2):
        with pytest.raises(ConfigurationError):
            store.refresh(shop.appid, CredentialKind.ACCESS_TOKEN, min_validity_s=0, force=True)
    since = float(redis.get(key) or 0)
    assert 0 < since <= datetime.now(UTC).timestamp()
    labels = (("appid", shop.appid), ("kind", "access_token"))
    assert _metrics()[("cardpipe_credential_refresh_failing_seconds", labels)] >= 0
    store.refresh(shop.appid, CredentialKind.ACCESS_TOKEN, min_validity_s=0, force=True)
    assert redis.get(key) is None
    assert _metrics()[("cardpipe_credential_refresh_failing_seconds", labels)] == 0


def test_rotation_time_changes_only_with_the_value(shop: Shop) -> None:
    def rotated_at() -> datetime | None:
        with session_scope() as session:
            return session.scalar(
                select(Credential.rotated_at)
                .join(OfficialAccount, OfficialAccount.id == Credential.official_account_id)
                .where(OfficialAccount.appid == shop.appid, Credential.kind == CredentialKind.CARD_TICKET)
            )

    assert rotated_at() is None
    credential_store().card_ticket(shop.appid)
    first = rotated_at()
    assert first is not None
    # WeChat hands back the same ticket until it expires: fetched again, not rotated.
    credential_store().refresh(shop.appid, CredentialKind.CARD_TICKET, min_validity_s=0, force=True)
    assert rotated_at() == first


def test_the_planner_leaves_the_stock_the_alert_compares_with(shop: Shop) -> None:
    order_ids = shop.orders(3)
    outcome = plan_preissue(
        shop.event_id,
        sessions=session_scope,
        card_api=credential_store().card_api,
        send_chunk=lambda event_id, chunk: None,
        chunk_tickets=100,
    )
    with session_scope() as session:
        event = session.get(Event, shop.event_id)
        assert event is not None
        assert (event.wechat_stock, event.wechat_stock_received) == (outcome.stock_before + outcome.stock_increase, 0)
    shop.issue(order_ids)
    shop.set_state(shop.ticket_ids()[:2], TicketState.CLAIMED, claimed_at=datetime.now(UTC))
    event_label = (("event_id", str(shop.event_id)),)
    metrics = _metrics()
    assert metrics[("cardpipe_card_stock_needed", event_label)] == 1
    assert metrics[("cardpipe_card_stock_wechat", event_label)] == outcome.stock_before + outcome.stock_increase - 2
    # An import after pre-issue adds more tickets than the stock covers: the alert's condition.
    with session_scope() as session:
        session.execute(
            Event.__table__.update().where(Event.id == shop.event_id).values(tickets_total=Event.tickets_total + 5000)
        )
    metrics = _metrics()
    assert metrics[("cardpipe_card_stock_needed", event_label)] > metrics[("cardpipe_card_stock_wechat", event_label)]


def test_only_wechats_push_sets_the_confirmation_time(shop: Shop) -> None:
    (ticket_id,) = shop.issued(1)
    (ticket,) = shop.tickets([ticket_id])
    assert ticket.code is not None
    with session_scope() as session:
        confirm_claim(session, ticket_id=ticket_id, card_id=shop.card_id, code=ticket.code, signal=Signal.CLIENT)
    (claimed,) = shop.tickets([ticket_id])
    assert claimed.claimed_at is not None and claimed.confirmed_at is None
    with session_scope() as session:
        confirm_claim(session, ticket_id=ticket_id, card_id=shop.card_id, code=ticket.code, signal=Signal.WECHAT)
        confirmed = session.get(Ticket, ticket_id)
        assert confirmed is not None and confirmed.confirmed_at is not None
        assert confirmed.claimed_at == claimed.claimed_at <= confirmed.confirmed_at
