"""The admin API of events end to end: create, import (streamed upload), pre-issue through the
real Redis broker and a worker, progress per state."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api import create_app
from cardpipe.cli import app as cli
from tests.conftest import ADMIN_TOKEN
from tests.preissue.conftest import Organiser, base_info, orders_csv, orders_jsonl
from tests.settings_env import environment

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CSV = {**ADMIN, "Content-Type": "text/csv"}


@pytest.fixture
def client(organiser: Organiser) -> Iterator[TestClient]:
    with TestClient(create_app()) as client:
        yield client


def _event_body(organiser: Organiser, **fields: object) -> dict[str, object]:
    return {
        "name": "Launch night",
        "official_account_appid": organiser.world.oa_appid,
        "mini_program_appid": organiser.world.mp_appid,
        "card": {"card_type": "MEETING_TICKET", "base_info": base_info(), "meeting_detail": "Hall B"},
        "launch_at": "2026-12-31T20:00:00+08:00",
        **fields,
    }


def _create(client: TestClient, organiser: Organiser, **fields: object) -> dict[str, Any]:
    response = client.post("/v1/admin/events", json=_event_body(organiser, **fields), headers=ADMIN)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _wait_issued(client: TestClient, event_id: int, timeout_s: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    while True:
        progress = client.get(f"/v1/admin/events/{event_id}/progress", headers=ADMIN).json()
        if progress["state"] == "issued":
            return dict(progress)
        assert time.monotonic() < deadline, progress
        time.sleep(0.05)


def test_endpoints_need_the_admin_token(client: TestClient, organiser: Organiser) -> None:
    assert client.post("/v1/admin/events", json=_event_body(organiser)).status_code == 401
    assert client.get("/v1/admin/events/1/progress").status_code == 401
    assert (
        client.post("/v1/admin/events/1/orders", content=b"x", headers={"Content-Type": "text/csv"}).status_code == 401
    )


def test_create_and_read_an_event(client: TestClient, organiser: Organiser) -> None:
    created = _create(client, organiser, code_policy={"length": 16})

    assert created["card_id"] and created["state"] == "draft" and created["code_length"] == 16
    assert created["launch_at"] == "2026-12-31T12:00:00Z"
    assert client.get(f"/v1/admin/events/{created['id']}", headers=ADMIN).json() == created
    assert client.get("/v1/admin/events/999999", headers=ADMIN).status_code == 404


@pytest.mark.parametrize(
    ("fields", "status", "reason"),
    [
        ({"code_policy": {"length": 21}}, 422, "less than or equal to 20"),
        ({"code_policy": {"alphabet": "01234567ABCDEFGH"}}, 422, "ambiguous"),
        ({"card_id": "pSomeCard"}, 422, "either card_id"),
        ({"launch_at": "2026-12-31T20:00:00"}, 422, "timezone"),
        ({"card": {"card_type": "GENERAL_COUPON", "base_info": {}}}, 422, "MEETING_TICKET"),
    ],
)
def test_unusable_events_get_a_422_with_the_reason(
    client: TestClient, organiser: Organiser, fields: dict[str, object], status: int, reason: str
) -> None:
    response = client.post("/v1/admin/events", json=_event_body(organiser, **fields), headers=ADMIN)
    assert response.status_code == status and reason in response.text


def test_orders_upload_as_csv_or_json_lines(client: TestClient, organiser: Organiser) -> None:
    event_id = _create(client, organiser)["id"]
    big = orders_csv(3_000, tickets=2, unionid=False).encode()
    assert len(big) > 64 * 1024  # over the JSON body limit: the import has its own

    response = client.post(f"/v1/admin/events/{event_id}/orders", content=big, headers=CSV)
    again = client.post(f"/v1/admin/events/{event_id}/orders", content=big, headers=CSV)
    jsonl = client.post(
        f"/v1/admin/events/{event_id}/orders?format=jsonl",
        content=orders_jsonl(3_005, tickets=2).encode(),
        headers=ADMIN,
    )

    assert response.status_code == 200, response.text
    assert response.json() == {
        "rows": 3000,
        "inserted": 3000,
        "unchanged": 0,
        "tickets_added": 6000,
        "conflicts": [],
        "conflicts_total": 0,
    }
    assert (again.json()["inserted"], again.json()["unchanged"]) == (0, 3000)
    assert (jsonl.json()["inserted"], jsonl.json()["unchanged"]) == (5, 3000)


def test_a_malformed_upload_is_a_422_by_line(client: TestClient, organiser: Organiser) -> None:
    event_id = _create(client, organiser)["id"]
    body = b"order_no,openid,ticket_count\nA,oA,1\nB,oB,0\nC,oC,x\n"

    response = client.post(f"/v1/admin/events/{event_id}/orders", content=body, headers=CSV)

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"line": 3, "reason": "ticket_count must be 1..100, got 0"},
        {"line": 4, "reason": "ticket_count must be a whole number"},
    ]
    assert response.json()["total"] == 2
    progress = client.get(f"/v1/admin/events/{event_id}/progress", headers=ADMIN).json()
    assert progress["orders_total"] == 0


def test_an_upload_of_unknown_format_or_event_is_refused(client: TestClient, organiser: Organiser) -> None:
    event_id = _create(client, organiser)["id"]
    plain = {**ADMIN, "Content-Type": "text/plain"}
    assert client.post(f"/v1/admin/events/{event_id}/orders", content=b"x", headers=plain).status_code == 415
    assert client.post("/v1/admin/events/999999/orders", content=orders_csv(1), headers=CSV).status_code == 404


def test_preissue_through_the_broker_and_progress_per_state(
    client: TestClient, organiser: Organiser, broker_worker: dramatiq.Worker
) -> None:
    # Given an event with 1,000 orders of 1 to 3 tickets, its card approved
    created = _create(client, organiser)
    event_id = created["id"]
    organiser.fake.review_card(str(created["card_id"]))
    rows = "".join(f"O-{n},oBuyer{n},,{1 + n % 3}\n" for n in range(1_000))
    client.post(
        f"/v1/admin/events/{event_id}/orders", content="order_no,openid,unionid,ticket_count\n" + rows, headers=CSV
    )

    # When pre-issue is started
    started = client.post(f"/v1/admin/events/{event_id}/preissue", headers=ADMIN)

    # Then the planner and the chunk workers issue every ticket, and progress says so
    assert started.status_code == 202
    assert started.json() == {
        "event_id": event_id,
        "state": "preissuing",
        "progress_url": f"/v1/admin/events/{event_id}/progress",
    }
    progress = _wait_issued(client, event_id)
    assert progress["orders_total"] == progress["orders_complete"] == 1_000
    assert progress["tickets_total"] == progress["tickets_issued"] == 1_999
    assert progress["tickets_by_state"] == {
        "pending": 0,
        "ready": 1_999,
        "served": 0,
        "claimed": 0,
        "redeemed": 0,
        "deleted": 0,
        "revoked": 0,
    }
    light = client.get(f"/v1/admin/events/{event_id}/progress?by_state=false", headers=ADMIN).json()
    assert light["tickets_by_state"] is None and light["tickets_issued"] == 1_999


def test_cli_preissue_watch_follows_progress_to_the_end(organiser: Organiser, broker_worker: dramatiq.Worker) -> None:
    event_id = organiser.create_event()
    organiser.import_orders(event_id, 300, tickets=2)

    result = CliRunner().invoke(cli, ["preissue", str(event_id), "--watch"])

    assert result.exit_code == 0, result.output
    assert f"event {event_id} is preissuing; the planner is queued" in result.output
    assert "event " in result.output and "issued" in result.output
    assert "600 / 600" in result.output and "300 / 300" in result.output


def test_preissue_of_an_unknown_event_is_a_404(client: TestClient, organiser: Organiser) -> None:
    assert client.post("/v1/admin/events/999999/preissue", headers=ADMIN).status_code == 404


def test_the_import_has_its_own_body_limit_and_other_endpoints_keep_theirs(
    organiser: Organiser,
) -> None:
    with environment(CARDPIPE_MAX_IMPORT_BYTES=str(200 * 1024)), TestClient(create_app()) as client:
        event_id = _create(client, organiser)["id"]
        fits = orders_csv(2_000).encode()
        too_big = orders_csv(6_000).encode()
        assert 64 * 1024 < len(fits) < 200 * 1024 < len(too_big)

        assert client.post(f"/v1/admin/events/{event_id}/orders", content=fits, headers=CSV).status_code == 200
        refused = client.post(f"/v1/admin/events/{event_id}/orders", content=too_big, headers=CSV)
        padded = _event_body(organiser, notes="x" * 4000, card={"base_info": {"pad": "y" * 70_000}})
        json_refused = client.post("/v1/admin/events", json=padded, headers=ADMIN)
        progress = client.get(f"/v1/admin/events/{event_id}/progress", headers=ADMIN).json()

    assert refused.status_code == 413 and "larger than 204800 bytes" in refused.text
    assert json_refused.status_code == 413
    assert progress["orders_total"] == 2_000
