"""Must-show, on real workers: a 45009 stops one account's outbound work visibly and loses
nothing; a token invalidated during a pre-issue costs one refresh and no retry loop."""

from __future__ import annotations

import dramatiq
from fastapi.testclient import TestClient
from sqlalchemy import update

from api import create_app
from cardpipe.db import session_scope
from cardpipe.runtime import credential_store
from models import Event, EventState, Ticket, TicketState
from tests.conftest import ADMIN_TOKEN
from tests.credentials.conftest import Override, Shop, calls
from tests.waiting import wait_until
from wechat.fake import FakeWeChatControl
from workers.broker import broker
from workers.confirmations import confirm_claims
from workers.preissue import plan_preissue


def _confirmed(shop: Shop, ids: list[int]) -> int:
    return sum(t.confirmed_by_wechat for t in shop.tickets(ids))


def test_45009_stops_the_accounts_outbound_work_visibly_and_it_resumes_with_the_quota(
    shop: Shop, other_shop: Shop, fake: FakeWeChatControl, broker_worker: dramatiq.Worker, override_settings: Override
) -> None:
    override_settings(quota_probe_interval_s=1)
    blocked_ids = shop.claimed_by_client_only(12)
    other_ids = other_shop.claimed_by_client_only(12)
    fake.inject_errcode("/card/code/get", 45009, appid=shop.appid)

    # When both accounts' outbound work runs
    for i in range(0, 12, 3):
        confirm_claims.send(shop.appid, blocked_ids[i : i + 3])
        confirm_claims.send(other_shop.appid, other_ids[i : i + 3])

    # Then the other account's work completes while this one's stops, and ops see why
    wait_until(lambda: _confirmed(other_shop, other_ids) == 12, what="other account confirmed")
    client = TestClient(create_app())
    status = client.get(
        f"/v1/admin/official-accounts/{shop.appid}/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ).json()
    assert status["quota"]["blocked"] is True
    assert "45009" in status["quota"]["reason"] and "/card/code/get" in status["quota"]["reason"]
    assert status["quota"]["blocked_until"] is not None
    assert status["counters"]["daily_quota"] >= 1
    assert "access_token" in status and "value" not in str(status["access_token"])
    assert _confirmed(shop, blocked_ids) == 0
    # While blocked, one probe per interval reaches WeChat (besides the calls already in flight
    # when the first 45009 came back, one per worker thread): no retry storm, no dead letter
    wait_until(lambda: credential_store().guard.status(shop.appid).counters.get("quota_probes", 0) >= 3)
    probes = credential_store().guard.status(shop.appid).counters["quota_probes"]
    assert calls(fake, shop.appid, "/card/code/get") <= broker_worker.worker_threads + probes
    assert broker.client.zcard("dramatiq:wechat.XQ") == 0

    # When the quota comes back, the next probe ends the block and nothing was lost
    fake.clear_faults()
    wait_until(lambda: _confirmed(shop, blocked_ids) == 12, what="blocked account resumed", timeout_s=30)
    assert not credential_store().guard.status(shop.appid).blocked
    unblocked = client.get(
        f"/v1/admin/official-accounts/{shop.appid}/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ).json()
    assert unblocked["quota"]["blocked"] is False
    broker.join("wechat")
    assert broker.client.zcard("dramatiq:wechat.XQ") == 0


def test_a_token_invalidated_during_a_pre_issue_costs_one_refresh_and_no_loop(
    shop: Shop, fake: FakeWeChatControl, broker_worker: dramatiq.Worker
) -> None:
    order_ids = shop.orders(300, tickets=2)
    with session_scope() as session:
        session.execute(update(Event).where(Event.id == shop.event_id).values(state=EventState.PREISSUING))
    fake.reset_stats()

    # WeChat invalidates every token of the account, then the pre-issue runs
    assert fake.invalidate_tokens(shop.appid) >= 1
    plan_preissue.send(shop.event_id)
    broker.join("preissue")
    broker_worker.join()

    tickets = shop.tickets()
    assert len(tickets) == 600 and {t.state for t in tickets} == {TicketState.READY}
    assert {t.order_id for t in tickets} == set(order_ids)
    stats = fake.stats()
    assert stats["token_fetches"].get(shop.appid, 0) == 1  # exactly one refresh
    assert stats["errcodes"]["/card/get"] == {"40001": 1}  # one refused call, retried once
    assert stats["calls_by_appid"][shop.appid]["/card/get"] == 2
    assert credential_store().guard.status(shop.appid).counters["token_invalid"] == 1
    with session_scope() as session:
        assert session.get_one(Event, shop.event_id).state == EventState.ISSUED
        assert session.query(Ticket).filter(Ticket.event_id == shop.event_id).count() == 600
