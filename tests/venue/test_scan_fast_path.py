"""``POST /v1/redemptions`` in front of FastAPI: what it answers itself, what it leaves to the
route (with the body intact), and how long a gate's token is remembered."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from cardpipe.db import session_scope
from cardpipe.routes import scan_fast_path
from models import Gate
from tests.redemptions.conftest import GATE, GateEvent, nonce, scan
from tests.venue.conftest import make_gate, make_list, scan_as


def test_bodies_the_fast_path_declines_get_the_routes_own_answers(client: TestClient, gate_event: GateEvent) -> None:
    (ticket,) = gate_event.tickets(1)
    body = scan(ticket.code)

    no_token = client.post("/v1/redemptions", json=body)
    bad_token = client.post("/v1/redemptions", json=body, headers={"Authorization": "Bearer nope"})
    malformed = client.post("/v1/redemptions", json={**body, "nonce": "x"}, headers=GATE)
    form = client.post("/v1/redemptions", data=body, headers=GATE)
    not_json = client.post(
        "/v1/redemptions", content=b"{not json", headers={**GATE, "Content-Type": "application/json"}
    )

    assert no_token.status_code == 401 and bad_token.status_code == 403
    assert malformed.status_code == 422 and "nonce" in malformed.text
    assert form.status_code == 422 and not_json.status_code == 422
    admitted = client.post("/v1/redemptions", json=body, headers=GATE)
    assert admitted.status_code == 200 and admitted.json()["result"] == "ok"


def test_a_scan_naming_another_gate_than_its_token_is_refused(client: TestClient, gate_event: GateEvent) -> None:
    hall = make_list(client, gate_event.event_id, name="hall", policy="multi")
    north = make_gate(client, gate_event.event_id, hall["id"], "north")
    (ticket,) = gate_event.tickets(1)

    other_gate = client.post("/v1/redemptions", json={**scan(ticket.code), "gate": "south"}, headers=north)
    other_event = client.post(
        "/v1/redemptions",
        json={"code": ticket.code, "nonce": nonce(), "event_id": gate_event.event_id + 1},
        headers=north,
    )

    assert other_gate.status_code == 422 and "north" in other_gate.json()["detail"]
    assert other_event.status_code == 422 and "event" in other_event.json()["detail"]


def test_a_deleted_gates_token_stops_within_the_remembered_time(
    client: TestClient, gate_event: GateEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan_fast_path, "GATE_TOKEN_TTL_S", 0.3)
    hall = make_list(client, gate_event.event_id, name="hall", policy="multi")
    north = make_gate(client, gate_event.event_id, hall["id"], "north")
    (ticket,) = gate_event.tickets(1)
    assert scan_as(client, north, ticket.code)["result"] == "ok"

    with session_scope() as session:
        session.execute(delete(Gate).where(Gate.name == "north"))
    time.sleep(0.4)

    refused = client.post("/v1/redemptions", json={"code": ticket.code, "nonce": nonce()}, headers=north)
    assert refused.status_code == 403
