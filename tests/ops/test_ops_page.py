"""The ops page in a real headless Chromium against a running api, PostgreSQL and Redis: the
numbers it shows match the API, requeue works from the page, and a screenshot is saved."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
import requests
from sqlalchemy.orm import Session

from api import create_app
from models import Event, MiniProgram, OfficialAccount, Order, Ticket, TicketState
from tests.conftest import ADMIN_TOKEN
from tests.live_server import serve
from tests.services import in_ci
from workers.broker import broker

SCREENSHOT = Path(os.environ.get("CARDPIPE_TEST_ARTIFACTS", "test-artifacts")) / "ops-page.png"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dramatiq.actor(queue_name="maintenance", max_retries=0, actor_name="tests_ops_page_fails")
def page_fails(order: int) -> None:
    raise RuntimeError(f"page boom {order}")


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "Chromium not found; install Debian's browser with: apt-get install chromium"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def stack(session: Session, redis_url: str) -> Iterator[str]:
    """A running api with one event in the database and one dead letter in the broker."""
    broker.flush_all()
    oa = OfficialAccount(appid="wxopspage01", app_secret="secret-value", server_token="tok")
    session.add(oa)
    session.flush()
    mp = MiniProgram(appid="wxopsmp01", app_secret="secret-value", official_account_id=oa.id)
    session.add(mp)
    session.flush()
    event = Event(name="Ops Expo", official_account_id=oa.id, mini_program_id=mp.id, card_id="pOPSPAGE")
    session.add(event)
    session.flush()
    states = [TicketState.READY] * 3 + [TicketState.CLAIMED] * 2 + [TicketState.REDEEMED]
    for seq, state in enumerate(states, start=1):
        order = Order(event_id=event.id, order_no=f"OPS{seq}", mp_openid="oMP", ticket_count=1)
        session.add(order)
        session.flush()
        session.add(
            Ticket(event_id=event.id, order_id=order.id, seq=1, card_id="pOPSPAGE", code=f"C{seq}", state=state)
        )
    session.commit()

    worker = dramatiq.Worker(broker, queues={"maintenance"}, worker_timeout=100, worker_threads=1)
    worker.start()
    page_fails.send(1)
    deadline = time.monotonic() + 10
    while not broker.client.zcard("dramatiq:maintenance.XQ"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker.stop()
    with serve(create_app()) as url:
        yield url
    broker.flush_all()


def test_ops_page_shows_the_api_numbers_and_requeues(stack: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = _chromium()
    queues = requests.get(f"{stack}/ops/queues", headers=ADMIN, timeout=5).json()
    (event,) = requests.get(f"{stack}/ops/events", headers=ADMIN, timeout=5).json()
    maintenance = next(q for q in queues["queues"] if q["name"] == "maintenance")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{stack}/ops")
        page.fill("#token", ADMIN_TOKEN)
        page.click("#login button")

        queue_row = page.locator('#queues tr[data-queue="maintenance"]')
        expect(queue_row.locator('[data-field="dead"]')).to_have_text(str(maintenance["dead"]))
        expect(queue_row.locator('[data-field="ready"]')).to_have_text(str(maintenance["ready"]))
        event_row = page.locator(f'#events tr[data-event="{event["event_id"]}"]')
        for field in ("orders", "issued", "ready", "claimed", "redeemed"):
            expected = event[field] if field in event else event["tickets_by_state"][field]
            expect(event_row.locator(f'[data-field="{field}"]')).to_have_text(str(expected))
        expect(page.locator("#dead-letters tbody tr")).to_have_count(1)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        page.click("#dead-letters button.requeue")
        expect(queue_row.locator('[data-field="dead"]')).to_have_text("0")
        expect(queue_row.locator('[data-field="ready"]')).to_have_text("1")
        browser.close()

    after = requests.get(f"{stack}/ops/queues", headers=ADMIN, timeout=5).json()
    maintenance_after = next(q for q in after["queues"] if q["name"] == "maintenance")
    assert (maintenance_after["dead"], maintenance_after["ready"]) == (0, 1)
    assert SCREENSHOT.stat().st_size > 10_000
