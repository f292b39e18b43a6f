"""The ops page in a real headless Chromium against a running api, PostgreSQL and Redis: the
numbers it shows match the API, requeue works from the page, the charts draw the API's numbers
after a scripted few minutes of launch traffic, the page reads in Chinese on a phone, and a
screenshot of each is saved (``CARDPIPE_TEST_ARTIFACTS`` if set, else the test's tmp dir)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
import requests
from playwright.sync_api import Page
from sqlalchemy.orm import Session

from api import create_app
from cardpipe.services import ops_history
from models import Event, MiniProgram, OfficialAccount, Order, Ticket, TicketState
from tests.backing_services import in_ci
from tests.conftest import ADMIN_TOKEN
from tests.live_server import serve
from tests.ops.launch_minutes import APPID, Launch, play
from workers.broker import broker

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


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where screenshots go: ``CARDPIPE_TEST_ARTIFACTS`` (outside git) if set, else the tmp dir."""
    configured = os.environ.get("CARDPIPE_TEST_ARTIFACTS")
    directory = Path(configured) if configured else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    return directory


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


def test_ops_page_shows_the_api_numbers_and_requeues(stack: str, artifacts: Path) -> None:
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
        screenshot = artifacts / "ops-page.png"
        page.screenshot(path=str(screenshot), full_page=True)

        page.click("#dead-letters button.requeue")
        expect(queue_row.locator('[data-field="dead"]')).to_have_text("0")
        expect(queue_row.locator('[data-field="ready"]')).to_have_text("1")
        browser.close()

    after = requests.get(f"{stack}/ops/queues", headers=ADMIN, timeout=5).json()
    maintenance_after = next(q for q in after["queues"] if q["name"] == "maintenance")
    assert (maintenance_after["dead"], maintenance_after["ready"]) == (0, 1)
    assert screenshot.stat().st_size > 10_000


@pytest.fixture
def launched(session: Session, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Launch]]:
    """A running api after three scripted launch minutes, each sampled at its end, with one
    series more than the page knows (as a new sampler function would add)."""
    broker.flush_all()
    monkeypatch.setitem(ops_history.SERIES, "inside_now", lambda window: {"hall A": 42.0})
    launch = play(session, now=time.time())
    with serve(create_app()) as url:
        yield url, launch
    broker.flush_all()


def _connect(page: Page, url: str) -> None:
    page.goto(f"{url}/ops")
    page.fill("#token", ADMIN_TOKEN)
    page.click("#login button")


def _drawn_series(page: Page, series: str) -> dict[str, dict[int, float | None]]:
    """What a chart drew: label → minute → value, read from its SVG."""
    figure = page.locator(f'figure.chart[data-series="{series}"]')
    minutes = json.loads(figure.locator("svg").get_attribute("data-minutes") or "[]")
    drawn = {}
    for path in figure.locator("path.line").all():
        values = json.loads(path.get_attribute("data-values") or "[]")
        drawn[path.get_attribute("data-label") or ""] = dict(zip(minutes, values, strict=True))
    return drawn


def test_ops_charts_draw_the_apis_numbers_and_read_in_chinese(launched: tuple[str, Launch], artifacts: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, launch = launched
    event_id = launch.event_id
    executable = _chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-US")
        _connect(page, url)
        claims_line = page.locator(f'figure[data-series="claims"] path[data-label="{event_id}"]')
        expect(claims_line).to_have_count(1)
        expect(page.locator('figure[data-series="claims"] li[data-label] .last')).to_have_text("9")
        history = requests.get(f"{url}/ops/history?minutes=60", headers=ADMIN, timeout=5).json()
        for series, columns in history["series"].items():
            drawn = _drawn_series(page, series)
            assert set(drawn) == set(columns), series
            for label, values in columns.items():
                expected = dict(zip(history["minutes"], values, strict=True))
                shared = sorted(set(expected) & set(drawn[label]))
                # The scripted minutes are the newest three, whichever minute the page loaded in.
                assert len(shared) >= 58
                assert [drawn[label][m] for m in shared] == [expected[m] for m in shared], (series, label)
        drawn_claims = _drawn_series(page, "claims")[str(event_id)]
        assert [drawn_claims[m] for m in launch.minute_ends] == [2.0, 5.0, 9.0]
        expect(page.locator('figure[data-series="claims"] figcaption')).to_have_text("Claims per minute")
        expect(page.locator(f'figure[data-series="claims"] li[data-label="{event_id}"]')).to_contain_text("Launch Expo")
        extra = page.locator('figure[data-series="inside_now"]')
        expect(extra.locator('path[data-label="hall A"]')).to_have_count(1)
        expect(extra.locator("li[data-label] .last")).to_have_text("42")
        expect(page.locator("#credentials tbody tr")).to_have_count(2)
        expect(page.locator(f'#credentials tr[data-credential="{APPID} card_ticket"] td').nth(2)).to_have_text("4")
        page.screenshot(path=str(artifacts / "ops-charts-en.png"), full_page=True)

        phone = browser.new_context(
            viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, locale="zh-CN"
        ).new_page()
        _connect(phone, url)
        expect(phone.locator("html")).to_have_attribute("lang", "zh")
        expect(phone.locator('figure[data-series="claims"] figcaption')).to_have_text("每分钟领取数")
        expect(phone.locator("#queues th").first).to_have_text("队列")
        expect(phone.locator(f'figure[data-series="claims"] path[data-label="{event_id}"]')).to_have_count(1)
        expect(phone.locator('figure[data-series="claims"] li[data-label] .last')).to_have_text("9")
        expect(phone.locator(f'#credentials tr[data-credential="{APPID} card_ticket"] td').nth(1)).to_have_text(
            "卡券 api_ticket"
        )
        # One chart per row on a phone: no chart is wider than the screen.
        widths = phone.locator("figure.chart").evaluate_all("(charts) => charts.map((c) => c.offsetWidth)")
        assert widths and max(widths) <= 390
        phone.screenshot(path=str(artifacts / "ops-charts-zh-phone.png"), full_page=True)

        phone.click('nav.languages a[hreflang="en"]')
        expect(phone.locator("html")).to_have_attribute("lang", "en")
        expect(phone.locator('figure[data-series="claims"] figcaption')).to_have_text("Claims per minute")
        browser.close()

    for name in ("ops-charts-en.png", "ops-charts-zh-phone.png"):
        assert (artifacts / name).stat().st_size > 10_000
