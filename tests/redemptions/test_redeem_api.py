"""POST /v1/redemptions: instant local answer, idempotent per nonce, enumerated reasons."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from redis.exceptions import ConnectionError as RedisConnectionError

from api import create_app
from cardpipe.routes.scan_fast_path import SEND_EVERY_S
from models import ConsumeSync, RedemptionResult, TicketState
from tests.redemptions.conftest import GATE, GateEvent, nonce, redemption_rows, scan, set_state, ticket_state
from tests.waiting import wait_until
from workers.broker import broker


@pytest.fixture
def client(gate_event: GateEvent) -> Iterator[TestClient]:
    broker.flush_all()
    with TestClient(create_app()) as client:
        yield client
    broker.flush_all()


def _on_queue() -> int:
    return int(broker.client.llen(f"{broker.namespace}:wechat"))


def queued_consumes(at_least: int = 0) -> int:
    """Consume messages on the queue once ``at_least`` arrived and one more sending period
    passed (the api sends them in batches, within ``SEND_EVERY_S`` of their answers)."""
    wait_until(lambda: _on_queue() >= at_least, what=f"{at_least} consumes queued")
    time.sleep(2 * SEND_EVERY_S)
    return _on_queue()


def test_a_claimed_ticket_is_let_in_and_its_consume_queued(client: TestClient, gate_event: GateEvent) -> None:
    (ticket,) = gate_event.tickets(1)

    response = client.post("/v1/redemptions", json=scan(ticket.code, gate="north-1"), headers=GATE)

    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True and body["result"] == "ok"
    assert body["ticket_id"] == ticket.id and body["event_id"] == gate_event.event_id
    assert body["redeemed_gate"] == "north-1" and body["replayed"] is False
    assert ticket_state(ticket.id) == TicketState.REDEEMED
    (row,) = redemption_rows()
    assert row.result == RedemptionResult.OK and row.consume_sync == ConsumeSync.PENDING
    assert queued_consumes(1) == 1


def test_the_same_nonce_gets_the_same_answer_and_changes_nothing(client: TestClient, gate_event: GateEvent) -> None:
    (ticket,) = gate_event.tickets(1)
    request = scan(ticket.code, gate="north-1")

    first = client.post("/v1/redemptions", json=request, headers=GATE).json()
    again = client.post("/v1/redemptions", json=request, headers=GATE).json()

    assert again["replayed"] is True
    assert {k: v for k, v in again.items() if k != "replayed"} == {k: v for k, v in first.items() if k != "replayed"}
    assert len(redemption_rows()) == 1
    assert queued_consumes(1) == 1


def test_a_refusal_replayed_stays_the_refusal_it_was(client: TestClient, gate_event: GateEvent) -> None:
    (ticket,) = gate_event.tickets(1, state=TicketState.SERVED)
    request = scan(ticket.code)
    assert client.post("/v1/redemptions", json=request, headers=GATE).json()["result"] == "not_claimed"

    set_state(ticket.id, TicketState.CLAIMED)  # the holder claims it meanwhile

    replay = client.post("/v1/redemptions", json=request, headers=GATE).json()
    assert replay["result"] == "not_claimed" and replay["replayed"] is True
    assert ticket_state(ticket.id) == TicketState.CLAIMED
    assert client.post("/v1/redemptions", json=scan(ticket.code), headers=GATE).json()["result"] == "ok"


def test_already_redeemed_says_when_and_at_which_gate(client: TestClient, gate_event: GateEvent) -> None:
    (ticket,) = gate_event.tickets(1)
    first = client.post("/v1/redemptions", json=scan(ticket.code, gate="north-1"), headers=GATE).json()

    second = client.post("/v1/redemptions", json=scan(ticket.code, gate="south-2"), headers=GATE).json()

    assert second["ok"] is False and second["result"] == "already_redeemed"
    assert second["redeemed_gate"] == "north-1"
    assert second["redeemed_at"] == first["redeemed_at"]
    assert "north-1" in second["message"]
    assert queued_consumes(1) == 1


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (TicketState.PENDING, "not_claimed"),
        (TicketState.READY, "not_claimed"),
        (TicketState.SERVED, "not_claimed"),
        (TicketState.REVOKED, "revoked"),
        (TicketState.DELETED, "deleted"),
    ],
)
def test_tickets_not_claimed_are_refused_with_their_reason(
    client: TestClient, gate_event: GateEvent, state: TicketState, reason: str
) -> None:
    (ticket,) = gate_event.tickets(1, state=state)

    body = client.post("/v1/redemptions", json=scan(ticket.code), headers=GATE).json()

    assert body["ok"] is False and body["result"] == reason
    assert ticket_state(ticket.id) == state
    assert queued_consumes() == 0


def test_an_unknown_code_is_invalid_and_counted_for_the_gates_event(client: TestClient, gate_event: GateEvent) -> None:
    body = client.post("/v1/redemptions", json=scan("NOSUCHCODE42", card_id=gate_event.card_id), headers=GATE).json()

    assert body["result"] == "invalid" and body["ticket_id"] is None
    assert body["event_id"] == gate_event.event_id


def test_a_ticket_of_another_event_is_wrong_event(
    client: TestClient, gate_event: GateEvent, other_event: GateEvent
) -> None:
    (foreign,) = other_event.tickets(1)

    by_card = client.post("/v1/redemptions", json=scan(foreign.code, card_id=gate_event.card_id), headers=GATE)
    by_event = client.post("/v1/redemptions", json=scan(foreign.code, event_id=gate_event.event_id), headers=GATE)

    for response in (by_card, by_event):
        assert response.json()["result"] == "wrong_event"
        assert response.json()["event_id"] == gate_event.event_id
    assert ticket_state(foreign.id) == TicketState.CLAIMED


def test_the_right_event_named_by_the_gate_is_let_in(client: TestClient, gate_event: GateEvent) -> None:
    (ticket,) = gate_event.tickets(1)
    request = scan(ticket.code, card_id=gate_event.card_id, event_id=gate_event.event_id)
    assert client.post("/v1/redemptions", json=request, headers=GATE).json()["result"] == "ok"


def test_a_code_of_two_events_needs_the_gates_event(
    client: TestClient, gate_event: GateEvent, other_event: GateEvent
) -> None:
    (mine,) = gate_event.tickets(1)
    other_event.tickets(1, code=mine.code)

    ambiguous = client.post("/v1/redemptions", json=scan(mine.code), headers=GATE)
    assert ambiguous.status_code == 422 and "card_id" in ambiguous.json()["detail"]
    assert redemption_rows() == []
    chosen = client.post("/v1/redemptions", json=scan(mine.code, card_id=gate_event.card_id), headers=GATE)
    assert chosen.json()["result"] == "ok" and chosen.json()["ticket_id"] == mine.id


def test_a_nonce_reused_for_another_scan_is_a_conflict(client: TestClient, gate_event: GateEvent) -> None:
    first, second = gate_event.tickets(2)
    shared = nonce()
    assert client.post("/v1/redemptions", json={**scan(first.code), "nonce": shared}, headers=GATE).status_code == 200

    response = client.post("/v1/redemptions", json={**scan(second.code), "nonce": shared}, headers=GATE)

    assert response.status_code == 409 and "nonce" in response.json()["detail"]
    assert ticket_state(second.id) == TicketState.CLAIMED


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"nonce": "short"}, "nonce"),
        ({"nonce": "has:colon:inside"}, "nonce"),
        ({"code": "X" * 33}, "code"),
        ({"code": ""}, "code"),
        ({"gate": ""}, "gate"),
        ({"gate": "wechat:FROM_MP"}, "gate"),
        ({"cardId": "pX"}, "cardId"),
        ({"event_id": 0}, "event_id"),
    ],
)
def test_malformed_scans_are_422_and_store_nothing(
    client: TestClient, gate_event: GateEvent, change: dict[str, object], field: str
) -> None:
    (ticket,) = gate_event.tickets(1)

    response = client.post("/v1/redemptions", json={**scan(ticket.code), **change}, headers=GATE)

    assert response.status_code == 422
    assert field in {err["loc"][-1] for err in response.json()["detail"]}
    assert redemption_rows() == [] and ticket_state(ticket.id) == TicketState.CLAIMED


def test_a_gate_naming_an_unknown_event_is_told_so(client: TestClient, gate_event: GateEvent) -> None:
    response = client.post("/v1/redemptions", json=scan("NOSUCHCODE42", event_id=999_999), headers=GATE)
    assert response.status_code == 422 and "999999" in response.json()["detail"]
    response = client.post("/v1/redemptions", json=scan("NOSUCHCODE42", card_id="pNoSuchCard"), headers=GATE)
    assert response.status_code == 422 and "pNoSuchCard" in response.json()["detail"]
    assert redemption_rows() == []


def test_redeeming_needs_a_gate_or_admin_token(client: TestClient, gate_event: GateEvent) -> None:
    (ticket,) = gate_event.tickets(1)
    assert client.post("/v1/redemptions", json=scan(ticket.code)).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.post("/v1/redemptions", json=scan(ticket.code), headers=wrong).status_code == 403
    assert ticket_state(ticket.id) == TicketState.CLAIMED


def test_the_answer_does_not_wait_for_the_queue(
    client: TestClient, gate_event: GateEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis refusing the message leaves the redemption pending, its intent to the outbox relay."""
    (ticket,) = gate_event.tickets(1)

    def redis_down(*args: object, **kwargs: object) -> None:
        raise RedisConnectionError("redis down")

    monkeypatch.setattr(broker, "enqueue", redis_down)

    body = client.post("/v1/redemptions", json=scan(ticket.code), headers=GATE).json()

    assert body["ok"] is True
    (row,) = redemption_rows()
    assert row.consume_sync == ConsumeSync.PENDING
