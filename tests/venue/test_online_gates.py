"""Check-in lists at online gates: policies, limits, windows, anti-passback, capacity, revoked
and deleted tickets, gate tokens scoped to their event, and who is inside."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from cardpipe.db import session_scope
from models import CheckinList, ConsumeSync, OutboxMessage, TicketState
from tests.redemptions.conftest import ADMIN, GATE, GateEvent, redemption_rows, scan, set_state, ticket_state
from tests.venue.conftest import make_gate, make_list, occupancy, scan_as


def test_every_event_has_a_default_single_use_list_and_old_scans_still_work(
    client: TestClient, gate_event: GateEvent
) -> None:
    (ticket,) = gate_event.tickets(1)

    first = client.post("/v1/redemptions", json=scan(ticket.code), headers=GATE).json()
    second = client.post("/v1/redemptions", json=scan(ticket.code, gate="south"), headers=GATE).json()

    assert first["result"] == "ok" and first["direction"] == "entry"
    assert second["result"] == "already_redeemed" and second["redeemed_gate"] == "north-1"
    lists = client.get(f"/v1/admin/events/{gate_event.event_id}/checkin-lists", headers=ADMIN).json()
    assert [(item["name"], item["policy"], item["is_default"]) for item in lists] == [("default", "single", True)]
    assert first["list_id"] == lists[0]["id"]


def test_multi_entry_list_enters_exits_and_enters_again_without_consuming(
    client: TestClient, gate_event: GateEvent
) -> None:
    hall = make_list(client, gate_event.event_id, name="hall", policy="multi")
    north = make_gate(client, gate_event.event_id, hall["id"], "north")
    south = make_gate(client, gate_event.event_id, hall["id"], "south")
    (ticket,) = gate_event.tickets(1)

    results = [
        scan_as(client, north, ticket.code)["result"],
        scan_as(client, south, ticket.code, "exit")["result"],
        scan_as(client, south, ticket.code)["result"],
        scan_as(client, north, ticket.code)["result"],  # no anti-passback: admitted, still one inside
    ]

    assert results == ["ok", "ok", "ok", "ok"]
    assert ticket_state(ticket.id) == TicketState.CLAIMED  # the WeChat card is not consumed
    assert all(row.consume_sync == ConsumeSync.NOT_NEEDED for row in redemption_rows())
    counts = occupancy(client, gate_event.event_id)
    (hall_counts,) = [item for item in counts["lists"] if item["name"] == "hall"]
    assert (hall_counts["inside_now"], hall_counts["entries"], hall_counts["reentries"], hall_counts["exits"]) == (
        1,
        3,
        2,
        1,
    )
    assert counts["inside_now"] == 1


def test_anti_passback_and_limits(client: TestClient, gate_event: GateEvent) -> None:
    strict = make_list(
        client, gate_event.event_id, name="strict", policy="multi", entry_after_exit_only=True, max_entries=2
    )
    gate = make_gate(client, gate_event.event_id, strict["id"], "g1")
    daily = make_list(client, gate_event.event_id, name="daily", policy="multi", max_per_day=1)
    daily_gate = make_gate(client, gate_event.event_id, daily["id"], "g2")
    first, second = gate_event.tickets(2)

    assert scan_as(client, gate, first.code)["result"] == "ok"
    assert scan_as(client, gate, first.code)["result"] == "already_inside"
    assert scan_as(client, gate, first.code, "exit")["result"] == "ok"
    assert scan_as(client, gate, first.code, "exit")["result"] == "not_inside"
    assert scan_as(client, gate, first.code)["result"] == "ok"
    assert scan_as(client, gate, first.code, "exit")["result"] == "ok"
    assert scan_as(client, gate, first.code)["result"] == "limit_reached"
    assert scan_as(client, daily_gate, second.code)["result"] == "ok"
    assert scan_as(client, daily_gate, second.code, "exit")["result"] == "ok"
    refused = scan_as(client, daily_gate, second.code)
    assert refused["result"] == "day_limit_reached" and refused["ok"] is False
    counts = occupancy(client, gate_event.event_id)
    assert counts["refusals"] == {"already_inside": 1, "not_inside": 1, "limit_reached": 1, "day_limit_reached": 1}


def test_time_window(client: TestClient, gate_event: GateEvent) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    early = make_list(client, gate_event.event_id, name="evening", window_start=later.isoformat())
    gate = make_gate(client, gate_event.event_id, early["id"], "g")
    (ticket,) = gate_event.tickets(1)

    assert scan_as(client, gate, ticket.code)["result"] == "outside_window"
    assert ticket_state(ticket.id) == TicketState.CLAIMED


def test_revoked_and_deleted_tickets_never_enter_a_multi_list(client: TestClient, gate_event: GateEvent) -> None:
    hall = make_list(client, gate_event.event_id, name="hall", policy="multi")
    gate = make_gate(client, gate_event.event_id, hall["id"], "g")
    revoked, deleted = gate_event.tickets(2)
    assert scan_as(client, gate, revoked.code)["result"] == "ok"
    set_state(revoked.id, TicketState.REVOKED)
    set_state(deleted.id, TicketState.DELETED)

    assert scan_as(client, gate, revoked.code)["result"] == "revoked"
    assert scan_as(client, gate, deleted.code)["result"] == "deleted"


def test_capacity_is_reached_and_released(client: TestClient, gate_event: GateEvent) -> None:
    room = make_list(client, gate_event.event_id, name="room", policy="multi", capacity=2)
    gate = make_gate(client, gate_event.event_id, room["id"], "door")
    a, b, c = gate_event.tickets(3)

    assert [scan_as(client, gate, t.code)["result"] for t in (a, b, c)] == ["ok", "ok", "capacity_full"]
    assert scan_as(client, gate, a.code)["result"] == "ok"  # already inside: not one more
    assert scan_as(client, gate, a.code, "exit")["result"] == "ok"
    assert scan_as(client, gate, c.code)["result"] == "ok"
    with session_scope() as session:
        assert session.scalar(select(CheckinList.inside_now).where(CheckinList.id == room["id"])) == 2
    assert occupancy(client, gate_event.event_id)["inside_now"] == 2


def test_setting_a_capacity_recounts_who_is_inside(client: TestClient, gate_event: GateEvent) -> None:
    hall = make_list(client, gate_event.event_id, name="hall", policy="multi")
    gate = make_gate(client, gate_event.event_id, hall["id"], "door")
    a, b = gate_event.tickets(2)
    scan_as(client, gate, a.code)

    changed = client.put(
        f"/v1/admin/events/{gate_event.event_id}/checkin-lists/{hall['id']}",
        json={"name": "hall", "policy": "multi", "capacity": 1},
        headers=ADMIN,
    )

    assert changed.status_code == 200 and changed.json()["inside_now"] == 1
    assert scan_as(client, gate, b.code)["result"] == "capacity_full"


def test_lists_sharing_tickets_count_a_person_once_for_the_event(client: TestClient, gate_event: GateEvent) -> None:
    hall = make_list(client, gate_event.event_id, name="hall", policy="multi")
    stage = make_list(client, gate_event.event_id, name="stage", policy="multi")
    hall_gate = make_gate(client, gate_event.event_id, hall["id"], "hall-door")
    stage_gate = make_gate(client, gate_event.event_id, stage["id"], "stage-door")
    (ticket,) = gate_event.tickets(1)

    scan_as(client, hall_gate, ticket.code)
    scan_as(client, stage_gate, ticket.code)

    counts = occupancy(client, gate_event.event_id)
    assert counts["inside_now"] == 1
    assert sorted(item["inside_now"] for item in counts["lists"]) == [0, 1, 1]
    stats = client.get(f"/v1/events/{gate_event.event_id}/stats", headers=ADMIN).json()
    assert stats["venue"]["inside_now"] == 1
    metrics = client.get("/metrics", headers=ADMIN).text
    assert f'cardpipe_inside_now{{event_id="{gate_event.event_id}",list=""}} 1.0' in metrics
    assert f'cardpipe_inside_now{{event_id="{gate_event.event_id}",list="hall"}} 1.0' in metrics


def test_a_gate_token_is_scoped_to_its_event(client: TestClient, gate_event: GateEvent, other_event: GateEvent) -> None:
    hall = make_list(client, gate_event.event_id, name="hall", policy="multi")
    gate = make_gate(client, gate_event.event_id, hall["id"], "door")
    (foreign,) = other_event.tickets(1)

    assert scan_as(client, gate, foreign.code)["result"] == "wrong_event"
    assert ticket_state(foreign.id) == TicketState.CLAIMED
    claims_other = client.post(
        "/v1/redemptions",
        json={"code": foreign.code, "nonce": "n" * 16, "event_id": other_event.event_id},
        headers=gate,
    )
    assert claims_other.status_code == 422
    assert (
        client.post("/v1/redemptions", json=scan(foreign.code), headers={"Authorization": "Bearer nope"}).status_code
        == 403
    )


def test_a_gate_registered_by_name_uses_its_list_with_the_shared_token(
    client: TestClient, gate_event: GateEvent
) -> None:
    hall = make_list(client, gate_event.event_id, name="hall", policy="multi")
    make_gate(client, gate_event.event_id, hall["id"], "hall-door")
    (ticket,) = gate_event.tickets(1)

    answers = [
        client.post("/v1/redemptions", json=scan(ticket.code, gate="hall-door"), headers=GATE).json() for _ in "ab"
    ]

    assert [a["result"] for a in answers] == ["ok", "ok"] and answers[0]["list_id"] == hall["id"]


def test_list_settings_are_checked(client: TestClient, gate_event: GateEvent) -> None:
    base = f"/v1/admin/events/{gate_event.event_id}/checkin-lists"
    bad_window = {"name": "x", "window_start": "2026-08-01T10:00:00+08:00", "window_end": "2026-08-01T09:00:00+08:00"}
    assert client.post(base, json=bad_window, headers=ADMIN).status_code == 409
    assert client.post(base, json={"name": "default"}, headers=ADMIN).status_code == 409
    assert client.post(base, json={"name": "x", "capacity": 0}, headers=ADMIN).status_code == 422
    assert client.post(base, json={"name": "x", "consume_at_end": True}, headers=ADMIN).status_code == 409
    assert client.post("/v1/admin/events/999999/checkin-lists", json={"name": "x"}, headers=ADMIN).status_code == 404


def test_a_multi_list_can_consume_its_cards_when_the_event_ends(client: TestClient, gate_event: GateEvent) -> None:
    hall = make_list(client, gate_event.event_id, name="hall", policy="multi", consume_at_end=True)
    plain = make_list(client, gate_event.event_id, name="plain", policy="multi")
    gate = make_gate(client, gate_event.event_id, hall["id"], "door")
    entered, never = gate_event.tickets(2)
    scan_as(client, gate, entered.code)
    scan_as(client, gate, entered.code)
    url = f"/v1/admin/events/{gate_event.event_id}/checkin-lists/{hall['id']}/consume-at-end"

    first = client.post(url, headers=ADMIN).json()
    again = client.post(url, headers=ADMIN).json()

    assert (first["consumes_queued"], again["consumes_queued"]) == (1, 0)
    assert ticket_state(entered.id) == TicketState.REDEEMED and ticket_state(never.id) == TicketState.CLAIMED
    (end_row,) = [r for r in redemption_rows() if r.gate == "end-of-event"]
    assert end_row.consume_sync == ConsumeSync.PENDING
    with session_scope() as session:
        intents = session.execute(select(OutboxMessage.actor, OutboxMessage.args)).all()
    assert [(actor, json.loads(args)) for actor, args in intents] == [("consume_redeemed_codes", [[end_row.id]])]
    assert occupancy(client, gate_event.event_id)["entries"] == 2
    refused = client.post(
        f"/v1/admin/events/{gate_event.event_id}/checkin-lists/{plain['id']}/consume-at-end", headers=ADMIN
    )
    assert refused.status_code == 409


def test_window_times_need_a_timezone(client: TestClient, gate_event: GateEvent) -> None:
    base = f"/v1/admin/events/{gate_event.event_id}/checkin-lists"
    response = client.post(base, json={"name": "x", "window_start": "2026-08-01T10:00:00"}, headers=ADMIN)
    assert response.status_code == 422 and "timezone" in response.text
