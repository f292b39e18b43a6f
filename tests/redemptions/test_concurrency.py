"""Many gates at once, over real HTTP (uvicorn) against real PostgreSQL row locks."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from models import RedemptionResult, TicketState
from tests.redemptions.conftest import GATE, GateEvent, nonce, redemption_rows, ticket_state

GATES = 50


def _all_at_once(url: str, bodies: list[dict[str, Any]]) -> list[requests.Response]:
    """POST every body from its own thread, released together by a barrier."""
    start = threading.Barrier(len(bodies))

    def post(body: dict[str, Any]) -> requests.Response:
        with requests.Session() as session:
            start.wait()
            return session.post(f"{url}/v1/redemptions", json=body, headers=GATE, timeout=30)

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(post, bodies))


def test_fifty_gates_scanning_one_code_let_exactly_one_person_in(live_api: str, gate_event: GateEvent) -> None:
    (ticket,) = gate_event.tickets(1)
    bodies = [{"code": ticket.code, "gate": f"gate-{n:02d}", "nonce": nonce()} for n in range(GATES)]

    responses = _all_at_once(live_api, bodies)

    assert {r.status_code for r in responses} == {200}
    answers = [r.json() for r in responses]
    winners = [a for a in answers if a["result"] == "ok"]
    assert len(winners) == 1
    losers = [a for a in answers if a["result"] != "ok"]
    assert {a["result"] for a in losers} == {"already_redeemed"}
    assert {a["redeemed_gate"] for a in losers} == {winners[0]["gate"]}
    assert {a["redeemed_at"] for a in losers} == {winners[0]["redeemed_at"]}
    rows = redemption_rows()
    assert len(rows) == GATES
    assert sum(row.result == RedemptionResult.OK for row in rows) == 1
    assert ticket_state(ticket.id) == TicketState.REDEEMED


def test_a_gate_retrying_one_scan_concurrently_gets_one_answer(live_api: str, gate_event: GateEvent) -> None:
    """A gate that lost its connection and retried while the first try was still running."""
    (ticket,) = gate_event.tickets(1)
    body = {"code": ticket.code, "gate": "north-1", "nonce": nonce()}

    answers = [r.json() for r in _all_at_once(live_api, [body] * 10)]

    assert {a["result"] for a in answers} == {"ok"}
    assert len({a["answered_at"] for a in answers}) == 1
    assert sum(not a["replayed"] for a in answers) == 1
    assert len(redemption_rows()) == 1


def test_many_gates_many_codes_each_ticket_once(live_api: str, gate_event: GateEvent) -> None:
    """Ten tickets, each scanned at five gates at once: ten entries, forty refusals."""
    tickets = gate_event.tickets(10)
    bodies = [{"code": t.code, "gate": f"gate-{g}", "nonce": nonce()} for t in tickets for g in range(5)]

    answers = [r.json() for r in _all_at_once(live_api, bodies)]

    for ticket in tickets:
        results = sorted(a["result"] for a in answers if a["code"] == ticket.code)
        assert results == ["already_redeemed"] * 4 + ["ok"]
