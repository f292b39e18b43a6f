"""Card, pre-issue and running-system items: each failing for its reason, then passing after the
organiser's remedy (an edit in the WeChat back office, pre-issue, a worker, the scheduler…)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import dramatiq
from sqlalchemy import select, update

from cardpipe.db import session_scope
from cardpipe.runtime import redis_client
from cardpipe.services.queues import QueueMonitor
from cardpipe.services.readiness import signals
from cardpipe.services.readiness.report import Status
from models import Credential, OfficialAccount, Ticket
from tests.readiness.conftest import Setup
from tests.waiting import wait_until
from workers.broker import broker
from workers.preissue import plan_preissue


def test_a_card_still_in_audit(setup: Setup) -> None:
    setup.create_event()
    setup.import_orders()
    setup.preissue()
    item = setup.item("card.audit")
    assert item.status == Status.FAILING and "test whitelist" in item.detail
    assert "testwhitelist" in (item.remedy or "")

    setup.audit()
    assert setup.item("card.audit").status == Status.OK


def test_stock_and_orders_before_preissue(setup: Setup) -> None:
    setup.create_event()
    setup.audit()
    report = setup.check()
    assert report.item("preissue.orders").status == Status.FAILING and "import" in (
        report.item("preissue.orders").remedy or ""
    )
    setup.import_orders()
    report = setup.check()
    stock, orders = report.item("card.stock"), report.item("preissue.orders")
    assert stock.status == Status.FAILING and "stock 1 for 5 tickets" in stock.detail
    assert f"cardpipe preissue {setup.event_id}" in (stock.remedy or "")
    assert orders.status == Status.FAILING and "draft" in orders.detail

    setup.preissue()
    report = setup.check()
    assert report.item("card.stock").status == Status.OK and report.item("preissue.orders").status == Status.OK


def test_get_limit_below_the_largest_order(setup: Setup) -> None:
    setup.create_event(get_limit=2)
    setup.audit()
    setup.import_orders()
    setup.preissue()
    item = setup.item("card.get_limit")
    assert item.status == Status.FAILING and "get_limit 2" in item.detail and "holds: 3" in item.detail
    assert "45033" in item.detail and "at least 3" in (item.remedy or "")

    setup.fake.edit_card(setup.card_id, get_limit=3)
    assert setup.item("card.get_limit").status == Status.OK


def test_no_custom_code_permission(setup: Setup) -> None:
    setup.create_event()
    setup.audit()
    setup.import_orders()
    setup.preissue()
    setup.fake.set_card_permissions(setup.world.oa_appid, custom_code=False)
    item = setup.item("card.custom_code")
    assert item.status == Status.FAILING and "43009" in item.detail and "自定义code" in (item.remedy or "")

    setup.fake.set_card_permissions(setup.world.oa_appid, custom_code=True)
    assert setup.item("card.custom_code").status == Status.OK


def test_gifting_sharing_dates_and_mini_program_jumps(ready: Setup) -> None:
    now = int(time.time())
    ready.fake.edit_card(
        ready.card_id,
        can_give_friend=True,
        date_info={"type": "DATE_TYPE_FIX_TIME_RANGE", "begin_timestamp": now - 7200, "end_timestamp": now - 3600},
        center_title="Open",
        center_app_brand_user_name="wxsomeminiprogram",
    )
    report = ready.check()
    sharing, dates, jump = report.item("card.sharing"), report.item("card.dates"), report.item("card.mp_jump")
    assert sharing.status == Status.FAILING and "can_give_friend true" in sharing.detail
    assert "转赠" in (sharing.remedy or "")
    assert dates.status == Status.FAILING and "有效期" in (dates.remedy or "")
    assert jump.status == Status.FAILING and "@app" in (jump.remedy or "")

    ready.fake.edit_card(ready.card_id, can_give_friend=False, can_share=True)
    assert ready.item("card.sharing").status == Status.WARNING

    ready.fake.edit_card(
        ready.card_id,
        can_share=False,
        date_info={"type": "DATE_TYPE_FIX_TIME_RANGE", "begin_timestamp": now - 3600, "end_timestamp": now + 86400},
        center_app_brand_user_name="gh_0123456789ab@app",
    )
    assert ready.check().ready
    assert all(ready.item(key).status == Status.OK for key in ("card.sharing", "card.dates", "card.mp_jump"))


def test_launch_time_outside_the_validity(ready: Setup) -> None:
    with session_scope() as session:
        session.execute(
            update(type(ready.event())).values(launch_at=datetime.fromtimestamp(time.time() + 60 * 86400, UTC))
        )
    item = ready.item("card.dates")
    assert item.status == Status.FAILING and "launch at" in item.detail
    with session_scope() as session:
        session.execute(update(type(ready.event())).values(launch_at=datetime.fromtimestamp(time.time() + 86400, UTC)))
    assert ready.item("card.dates").status == Status.OK


def test_tickets_signed_by_an_older_api_ticket(ready: Setup) -> None:
    with session_scope() as session:
        first = session.scalar(select(Ticket.id).where(Ticket.event_id == ready.event_id).order_by(Ticket.id))
        version = session.scalar(select(Ticket.ticket_version).where(Ticket.id == first))
        session.execute(update(Ticket).where(Ticket.id == first).values(ticket_version=0))
    item = ready.item("preissue.signatures")
    assert (
        item.status == Status.FAILING and "1 outstanding tickets" in item.detail and "scheduler" in (item.remedy or "")
    )

    with session_scope() as session:
        session.execute(update(Ticket).where(Ticket.id == first).values(ticket_version=version))
    assert ready.item("preissue.signatures").status == Status.OK


def test_dead_letters(ready: Setup) -> None:
    plan_preissue.send_with_options(args=(10**9,), max_retries=0)
    monitor = QueueMonitor(broker)
    wait_until(lambda: monitor.dead_letters("preissue"), what="a dead letter")
    item = ready.item("preissue.queues")
    assert item.status == Status.FAILING and "preissue 1" in item.detail and "cardpipe dlq" in (item.remedy or "")

    monitor.purge("preissue")
    assert ready.item("preissue.queues").status == Status.OK


def test_scheduler_and_credential_expiry(ready: Setup) -> None:
    redis_client().delete(signals.LEADER_LEASE_KEY)
    with session_scope() as session:
        account_id = session.scalar(select(OfficialAccount.id).where(OfficialAccount.appid == ready.world.oa_appid))
        session.execute(
            update(Credential).where(Credential.official_account_id == account_id).values(expires_at=datetime.now(UTC))
        )
    for key in redis_client().scan_iter(match=f"cardpipe:credential:{ready.world.oa_appid}:*"):
        redis_client().delete(key)
    report = ready.check()
    scheduler, credentials = report.item("system.scheduler"), report.item("system.credentials")
    assert scheduler.status == Status.FAILING and "cardpipe scheduler" in (scheduler.remedy or "")
    assert credentials.status == Status.FAILING and "access_token expired" in credentials.detail
    # The check itself read the credentials like any worker: the dead ones were replaced.
    assert report.item("oa.credentials").status == Status.OK

    ready.lead()
    report = ready.check()
    assert report.item("system.scheduler").status == Status.OK and report.item("system.credentials").status == Status.OK


def test_a_queue_without_workers(setup: Setup, broker_worker: dramatiq.Worker) -> None:
    broker_worker.stop()
    setup.create_event()
    item = setup.item("system.workers")
    assert (
        item.status == Status.FAILING
        and "no live worker for" in item.detail
        and "cardpipe worker" in (item.remedy or "")
    )

    worker = dramatiq.Worker(broker, queues={"claims", "events"}, worker_threads=1)
    worker.start()
    try:
        item = setup.item("system.workers")
        assert item.status == Status.FAILING and "claims" not in item.detail.split("(")[0]
        assert "-Q preissue" in (item.remedy or "")
    finally:
        worker.stop()
    broker_worker.start()
    assert setup.item("system.workers").status == Status.OK
