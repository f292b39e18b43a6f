"""The entry points of the readiness check: the admin endpoints (JSON, admin token, 404s), the
``/ops`` page's readiness section in a real Chromium, and ``cardpipe doctor`` (table, exit status)."""

from __future__ import annotations

import requests
from typer.testing import CliRunner

import scheduler
from cardpipe.cli import app
from cardpipe.services.readiness import signals
from tests.conftest import ADMIN_TOKEN
from tests.ops.test_ops_page import CHROMIUM_FLAGS, _chromium
from tests.readiness.conftest import Setup

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_the_event_endpoint_answers_the_report(ready: Setup) -> None:
    url = f"{ready.api}/v1/admin/events/{ready.event_id}/readiness"
    assert requests.get(url, timeout=10).status_code == 401
    body = requests.get(url, headers=ADMIN, timeout=30).json()
    assert body["ready"] is True and body["counts"]["failing"] == 0
    keys = {item["key"] for item in body["items"]}
    assert {"oa.credentials", "card.get_limit", "system.scheduler"} <= keys
    assert ready.world.oa_secret not in str(body) and ready.world.mp_secret not in str(body)
    missing = requests.get(f"{ready.api}/v1/admin/events/999999/readiness", headers=ADMIN, timeout=10)
    assert missing.status_code == 404 and "no event" in missing.json()["detail"]

    ready.fake.edit_card(ready.card_id, get_limit=1)
    body = requests.get(url, headers=ADMIN, timeout=30).json()
    (limit,) = [item for item in body["items"] if item["key"] == "card.get_limit"]
    assert body["ready"] is False and limit["status"] == "failing" and "at least 3" in limit["remedy"]


def test_the_account_and_ops_endpoints(ready: Setup) -> None:
    account = requests.get(
        f"{ready.api}/v1/admin/official-accounts/{ready.world.oa_appid}/readiness", headers=ADMIN, timeout=30
    )
    assert account.status_code == 200 and account.json()["scope"] == f"official account {ready.world.oa_appid}"
    unknown = requests.get(f"{ready.api}/v1/admin/official-accounts/wxnosuch/readiness", headers=ADMIN, timeout=10)
    assert unknown.status_code == 404
    reports = requests.get(f"{ready.api}/ops/readiness", headers=ADMIN, timeout=30).json()
    assert [r["scope"] for r in reports] == [f"event {ready.event_id} Expo"]


def test_the_ops_page_shows_failing_items_and_remedies(ready: Setup) -> None:
    from playwright.sync_api import expect, sync_playwright

    ready.fake.edit_card(ready.card_id, get_limit=1)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.goto(f"{ready.api}/ops")
        page.fill("#token", ADMIN_TOKEN)
        page.click("#login button")
        page.click("#readiness-check")
        row = page.locator('#readiness tr[data-key="card.get_limit"]')
        expect(row).to_contain_text("FAILING", timeout=30_000)
        expect(row).to_contain_text("raise get_limit to at least 3")
        expect(page.locator("#readiness tbody tr").first).to_contain_text("NOT READY")
        browser.close()


def test_cardpipe_doctor_prints_the_table_and_exits_non_zero_when_not_ready(ready: Setup) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["doctor", "--event", str(ready.event_id)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "ready" in result.output and "Receive limit" in result.output

    ready.fake.edit_card(ready.card_id, get_limit=1)
    result = runner.invoke(app, ["doctor", "--event", str(ready.event_id)], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "NOT READY" in result.output and "raise get_limit to at least 3" in result.output
    assert runner.invoke(app, ["doctor", "--event", "999999"]).exit_code == 2
    account = runner.invoke(app, ["doctor", "--oa", ready.world.oa_appid, "--json"])
    assert account.exit_code == 0 and '"scope": "official account' in account.output


def test_the_lease_the_checks_read_is_the_schedulers() -> None:
    assert signals.LEADER_LEASE_KEY == scheduler.LEASE_KEY
