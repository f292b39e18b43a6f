"""Twenty gates, each with its own token, at once over real HTTP against PostgreSQL row locks."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from fastapi.testclient import TestClient

from models import RedemptionResult
from tests.redemptions.conftest import GateEvent, nonce, redemption_rows
from tests.venue.conftest import make_gate, make_list, occupancy

GATES = 20


def _all_at_once(url: str, scans: list[tuple[dict[str, str], dict[str, Any]]]) -> list[dict[str, Any]]:
    start = threading.Barrier(len(scans))

    def post(item: tuple[dict[str, str], dict[str, Any]]) -> dict[str, Any]:
        headers, body = item
        with requests.Session() as session:
            start.wait()
            response = session.post(f"{url}/v1/redemptions", json=body, headers=headers, timeout=30)
            assert response.status_code == 200, response.text
            answer: dict[str, Any] = response.json()
            return answer

    with ThreadPoolExecutor(max_workers=len(scans)) as pool:
        return list(pool.map(post, scans))


def test_twenty_gates_scanning_one_single_use_ticket_admit_exactly_one(
    live_api: str, client: TestClient, gate_event: GateEvent
) -> None:
    main = make_list(client, gate_event.event_id, name="main")
    gates = [make_gate(client, gate_event.event_id, main["id"], f"gate-{n}") for n in range(GATES)]
    (ticket,) = gate_event.tickets(1)

    answers = _all_at_once(live_api, [(g, {"code": ticket.code, "nonce": nonce()}) for g in gates])

    assert sorted(a["result"] for a in answers) == ["already_redeemed"] * (GATES - 1) + ["ok"]
    assert sum(r.result == RedemptionResult.OK for r in redemption_rows()) == 1
    assert occupancy(client, gate_event.event_id)["inside_now"] == 1


def test_twenty_gates_filling_a_capacity_admit_exactly_the_capacity(
    live_api: str, client: TestClient, gate_event: GateEvent
) -> None:
    room = make_list(client, gate_event.event_id, name="room", policy="multi", capacity=5)
    gates = [make_gate(client, gate_event.event_id, room["id"], f"door-{n}") for n in range(GATES)]
    tickets = gate_event.tickets(GATES)

    answers = _all_at_once(
        live_api, [(g, {"code": t.code, "nonce": nonce()}) for g, t in zip(gates, tickets, strict=True)]
    )

    assert sorted(a["result"] for a in answers) == ["capacity_full"] * (GATES - 5) + ["ok"] * 5
    counts = occupancy(client, gate_event.event_id)
    assert counts["inside_now"] == 5 and counts["lists"][-1]["inside_now"] == 5


def test_one_ticket_entering_and_exiting_at_many_gates_is_inside_once(
    live_api: str, client: TestClient, gate_event: GateEvent
) -> None:
    hall = make_list(client, gate_event.event_id, name="hall", policy="multi")
    gates = [make_gate(client, gate_event.event_id, hall["id"], f"door-{n}") for n in range(GATES)]
    (ticket,) = gate_event.tickets(1)

    _all_at_once(live_api, [(g, {"code": ticket.code, "nonce": nonce()}) for g in gates])

    counts = occupancy(client, gate_event.event_id)
    assert counts["inside_now"] == 1 and counts["entries"] == GATES and counts["reentries"] == GATES - 1
