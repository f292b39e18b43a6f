"""The gate page in a real headless Chromium: scans online, keeps deciding when the api is
stopped mid-test (same rules, from its snapshot), reopens while it is away, and uploads its scans
when the api is back."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi.testclient import TestClient

from api import create_app
from tests.live_server import free_port
from tests.ops.test_ops_page import CHROMIUM_FLAGS, _chromium
from tests.redemptions.conftest import GateEvent, redemption_rows
from tests.venue.conftest import make_gate, make_list, occupancy

VECTORS = json.loads((Path(__file__).parent / "rule_vectors.json").read_text())
SCREENSHOT = Path(os.environ.get("CARDPIPE_TEST_ARTIFACTS", "test-artifacts")) / "gate-page-offline.png"


@contextmanager
def api_on(port: int) -> Iterator[str]:
    """The app under uvicorn on a given port (so a stopped api can come back at the same address)."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "api did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_gate_page_keeps_working_offline_and_syncs_when_the_api_is_back(
    client: TestClient, gate_event: GateEvent
) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = _chromium()
    hall = make_list(client, gate_event.event_id, name="hall", policy="multi", entry_after_exit_only=True)
    token = make_gate(client, gate_event.event_id, hall["id"], "west")["Authorization"].split()[1]
    a, b, c = gate_event.tickets(3)
    port = free_port()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 480, "height": 800})
        result = page.locator("#result")

        def scan(code: str, direction: str = "entry") -> None:
            page.select_option("#direction", direction)
            page.fill("#code", code)
            page.press("#code", "Enter")

        with api_on(port) as url:
            page.goto(f"{url}/gate")
            page.fill("#token", token)
            page.click("#login button")
            expect(page.locator("#tickets")).to_have_text("3")
            expect(page.locator("#status")).to_have_attribute("data-online", "true")
            scan(a.code)
            expect(result).to_have_attribute("data-result", "ok")
            expect(result).to_have_attribute("data-offline", "false")
            expect(result).to_have_class("ok")
            # The page's copy of the rules answers every shared vector as the server's does.
            answers = page.evaluate(
                """(vectors) => vectors.map((v) => CardpipeRules.decide(v.rules || {}, v.state,
                    {entries: 0, day: null, day_entries: 0, inside: false, ...(v.history || {})},
                    v.direction || "entry", new Date(v.at), v.inside_now, v.ticket_class))""",
                VECTORS,
            )
            assert answers == [v["expect"] for v in VECTORS]
            assert page.evaluate("navigator.serviceWorker.ready.then(() => true)")

        # The api is gone: the page decides alone.
        scan(a.code)
        expect(result).to_have_attribute("data-result", "already_inside")
        expect(result).to_have_attribute("data-offline", "true")
        expect(result).to_have_class("refused")
        expect(page.locator("#status")).to_have_attribute("data-online", "false")
        scan(b.code)
        expect(result).to_have_attribute("data-result", "ok")
        scan(a.code, "exit")
        expect(result).to_have_attribute("data-result", "ok")
        # The browser reopens the page while the api is still away: it comes from the service
        # worker's cache, with the snapshot and the kept scans.
        page.reload()
        expect(page.locator("#pending")).to_have_text("3")
        scan("NOSUCHCODE")
        expect(result).to_have_attribute("data-result", "invalid")
        expect(page.locator("#pending")).to_have_text("4")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        with api_on(port):
            expect(page.locator("#pending")).to_have_text("0", timeout=20_000)
            expect(page.locator("#synced")).to_have_text("4")
            expect(page.locator("#conflicts")).to_have_text("0")
            expect(page.locator("#status")).to_have_attribute("data-online", "true")
            scan(c.code)
            expect(result).to_have_attribute("data-offline", "false")
            expect(result).to_have_attribute("data-result", "ok")
        browser.close()

    rows = redemption_rows()
    assert [(r.result, r.offline) for r in rows] == [
        ("ok", False),
        ("already_inside", True),
        ("ok", True),
        ("ok", True),
        ("invalid", True),
        ("ok", False),
    ]
    counts = occupancy(client, gate_event.event_id)
    assert (counts["inside_now"], counts["entries"], counts["exits"]) == (2, 3, 1)
