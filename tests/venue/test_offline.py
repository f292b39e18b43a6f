"""Offline gates: a snapshot with no usable codes, deltas since a cursor, and uploads merged
idempotently with conflicts flagged, never dropped."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from cardpipe.db import session_scope
from cardpipe.services import redemption_sync
from cardpipe.services.checkin.rules import History, Rules, decide
from cardpipe.services.checkin.snapshot import code_hash
from models import ConsumeSync, Direction, OutboxMessage, RedemptionResult, TicketState
from tests.redemptions.conftest import ADMIN, GATE, GateEvent, nonce, redemption_rows, set_state, ticket_state
from tests.venue.conftest import make_gate, make_list, occupancy, scan_as


def _snapshot(client: TestClient, gate: dict[str, str]) -> dict[str, Any]:
    response = client.get("/v1/gate/snapshot", headers=gate)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    answer: dict[str, Any] = response.json()
    return answer


def _upload(client: TestClient, gate: dict[str, str], scans: list[dict[str, Any]]) -> dict[str, Any]:
    response = client.post("/v1/gate/scans", json={"scans": scans}, headers=gate)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _offline(code: str, at: datetime, result: str = "ok", direction: str = "entry") -> dict[str, Any]:
    return {"nonce": nonce(), "code": code, "direction": direction, "scanned_at": at.isoformat(), "result": result}


def test_the_snapshot_holds_keyed_hashes_not_codes_and_decides_like_the_server(
    client: TestClient, gate_event: GateEvent
) -> None:
    main = make_list(client, gate_event.event_id, name="main")
    gate = make_gate(client, gate_event.event_id, main["id"], "g")
    claimed, revoked = gate_event.tickets(2)
    set_state(revoked.id, TicketState.REVOKED)

    snap = _snapshot(client, gate)

    text = str(snap)
    assert claimed.code not in text and revoked.code not in text
    codes = [snap["codes"][i : i + 16] for i in range(0, len(snap["codes"]), 16)]
    key = snap["hash"]["key"]
    states = dict(zip(codes, snap["states"], strict=True))
    assert states[code_hash(key, claimed.code)] == "c" and states[code_hash(key, revoked.code)] == "x"
    rules = Rules(**{k: snap["list"][k] for k in ("max_entries", "max_per_day", "capacity", "timezone")})
    at = datetime.now(UTC)
    assert decide(rules, "revoked", History(), Direction.ENTRY, at) == RedemptionResult.REVOKED
    assert client.get("/v1/gate/snapshot", headers=GATE).status_code == 403  # a shared token names no list


def test_deltas_bring_other_gates_scans_revocations_and_new_tickets(client: TestClient, gate_event: GateEvent) -> None:
    hall = make_list(client, gate_event.event_id, name="hall", policy="multi")
    offline_gate = make_gate(client, gate_event.event_id, hall["id"], "offline")
    online_gate = make_gate(client, gate_event.event_id, hall["id"], "online")
    entered, revoked = gate_event.tickets(2)
    snap = _snapshot(client, offline_gate)
    key = snap["hash"]["key"]

    scan_as(client, online_gate, entered.code)
    set_state(revoked.id, TicketState.REVOKED)
    (new,) = gate_event.tickets(1)
    delta = client.get("/v1/gate/deltas", params={"cursor": snap["cursor"]}, headers=offline_gate).json()

    assert delta["history"][code_hash(key, entered.code)] == [
        1,
        delta["history"][code_hash(key, entered.code)][1],
        1,
        True,
    ]
    assert delta["states"][code_hash(key, revoked.code)] == "x"
    assert delta["states"][code_hash(key, new.code)] == "c"


def test_two_offline_gates_admitting_one_single_use_ticket_are_both_recorded_with_one_conflict(
    client: TestClient, gate_event: GateEvent
) -> None:
    main = make_list(client, gate_event.event_id, name="main")
    east = make_gate(client, gate_event.event_id, main["id"], "east")
    west = make_gate(client, gate_event.event_id, main["id"], "west")
    (ticket,) = gate_event.tickets(1)
    at = datetime.now(UTC) - timedelta(minutes=5)

    first = _upload(client, east, [_offline(ticket.code, at)])
    second = _upload(client, west, [_offline(ticket.code, at + timedelta(seconds=30))])

    assert (first["recorded"], first["conflicts"]) == (1, 0)
    assert (second["recorded"], second["conflicts"]) == (1, 1)
    assert second["outcomes"][0]["conflict"] == "the server would answer already_redeemed"
    rows = redemption_rows()
    assert [(r.gate, r.result, r.offline) for r in rows] == [("east", "ok", True), ("west", "ok", True)]
    assert [r.consume_sync for r in rows] == [ConsumeSync.PENDING, ConsumeSync.NOT_NEEDED]
    assert ticket_state(ticket.id) == TicketState.REDEEMED
    conflicts = client.get(f"/v1/admin/events/{gate_event.event_id}/checkin-conflicts", headers=ADMIN).json()
    assert [(c["gate"], c["code"]) for c in conflicts] == [("west", ticket.code)]


def test_an_uploads_consumes_are_queued_one_intent_per_chunk(
    client: TestClient, gate_event: GateEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redemption_sync, "CONSUME_CHUNK", 2)
    main = make_list(client, gate_event.event_id, name="main")
    gate = make_gate(client, gate_event.event_id, main["id"], "g")
    tickets = gate_event.tickets(5)
    at = datetime.now(UTC) - timedelta(minutes=5)

    report = _upload(client, gate, [_offline(t.code, at + timedelta(seconds=n)) for n, t in enumerate(tickets)])

    assert report["recorded"] == 5
    consumed = [r.id for r in redemption_rows() if r.consume_sync == ConsumeSync.PENDING]
    with session_scope() as session:
        intents = session.execute(select(OutboxMessage.actor, OutboxMessage.args).order_by(OutboxMessage.id)).all()
    assert {actor for actor, _ in intents} == {"consume_redeemed_codes"}
    assert [json.loads(args)[0] for _, args in intents] == [consumed[0:2], consumed[2:4], consumed[4:]]


def test_an_upload_is_idempotent_per_nonce(client: TestClient, gate_event: GateEvent) -> None:
    hall = make_list(client, gate_event.event_id, name="hall", policy="multi")
    gate = make_gate(client, gate_event.event_id, hall["id"], "g")
    (ticket,) = gate_event.tickets(1)
    at = datetime.now(UTC) - timedelta(minutes=10)
    batch = [
        _offline(ticket.code, at),
        _offline(ticket.code, at + timedelta(minutes=1), direction="exit"),
        _offline(ticket.code, at + timedelta(minutes=2)),
    ]

    first = _upload(client, gate, batch)
    again = _upload(client, gate, batch)
    reused = _upload(client, gate, [{**batch[0], "code": "OTHERCODE"}])

    assert (first["recorded"], again["recorded"], again["duplicates"]) == (3, 0, 3)
    assert reused["rejected"] == 1
    assert len(redemption_rows()) == 3
    counts = occupancy(client, gate_event.event_id)
    assert (counts["inside_now"], counts["entries"], counts["reentries"], counts["exits"]) == (1, 2, 1, 1)


def test_an_offline_admission_of_a_revoked_ticket_is_kept_and_flagged(
    client: TestClient, gate_event: GateEvent
) -> None:
    hall = make_list(client, gate_event.event_id, name="hall", policy="multi")
    gate = make_gate(client, gate_event.event_id, hall["id"], "g")
    (ticket,) = gate_event.tickets(1)
    set_state(ticket.id, TicketState.REVOKED)

    report = _upload(
        client, gate, [_offline(ticket.code, datetime.now(UTC)), _offline("NOSUCHCODE", datetime.now(UTC), "invalid")]
    )

    assert report["recorded"] == 2 and report["conflicts"] == 1
    assert report["outcomes"][0]["conflict"] == "the server would answer revoked"
    assert [r.result for r in redemption_rows()] == [RedemptionResult.OK, RedemptionResult.INVALID]


def test_an_upload_checks_its_input(client: TestClient, gate_event: GateEvent) -> None:
    hall = make_list(client, gate_event.event_id, name="hall")
    gate = make_gate(client, gate_event.event_id, hall["id"], "g")
    naive = {"nonce": nonce(), "code": "X", "scanned_at": "2026-07-31T10:00:00", "result": "ok"}
    assert client.post("/v1/gate/scans", json={"scans": [naive]}, headers=gate).status_code == 422
    assert (
        client.post("/v1/gate/scans", json={"scans": [{**naive, "result": "maybe"}]}, headers=gate).status_code == 422
    )
    assert client.post("/v1/gate/scans", json={"scans": []}, headers=GATE).status_code == 403
