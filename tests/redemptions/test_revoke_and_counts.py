"""Revocation (admin) with its queued code/unavailable, and the per-event redemption counts."""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
from fastapi.testclient import TestClient

from api import create_app
from cardpipe.db import session_scope
from cardpipe.runtime import credential_store
from cardpipe.services.redemption_sync import sync_revocation
from cardpipe.services.revocations import revoke_ticket
from models import ConsumeSync, Revocation, TicketState
from tests.redemptions.conftest import ADMIN, GATE, GateEvent, scan, set_state, ticket_state, wait_until
from wechat.fake import FakeWeChatControl


@pytest.fixture
def client(gate_event: GateEvent, broker_worker: dramatiq.Worker, fast_retries: None) -> Iterator[TestClient]:
    with TestClient(create_app()) as client:
        yield client


def revocation(ticket_id: int) -> Revocation:
    with session_scope() as session:
        return session.query(Revocation).filter_by(ticket_id=ticket_id).one()


def test_a_revoked_ticket_is_refused_and_made_unavailable_in_wechat(client: TestClient, gate_event: GateEvent) -> None:
    (ticket,) = gate_event.claimed_in_wechat(1)

    response = client.post(f"/v1/tickets/{ticket.id}/revoke", json={"reason": "退款"}, headers=ADMIN)

    assert response.status_code == 200
    assert response.json()["wechat_sync"] == "pending" and response.json()["already_revoked"] is False
    assert ticket_state(ticket.id) == TicketState.REVOKED
    assert client.post("/v1/redemptions", json=scan(ticket.code), headers=GATE).json()["result"] == "revoked"
    wait_until(lambda: revocation(ticket.id).wechat_sync != ConsumeSync.PENDING, what="code/unavailable")
    assert revocation(ticket.id).wechat_sync == ConsumeSync.DONE
    assert gate_event.user_card_status(ticket.code) == "UNAVAILABLE"


def test_revoking_twice_answers_the_first_revocation(client: TestClient, gate_event: GateEvent) -> None:
    (ticket,) = gate_event.tickets(1, state=TicketState.READY)

    first = client.post(f"/v1/tickets/{ticket.id}/revoke", json={"reason": "refund"}, headers=ADMIN).json()
    again = client.post(f"/v1/tickets/{ticket.id}/revoke", headers=ADMIN).json()

    assert first["wechat_sync"] == "not_needed", "a ready ticket never reached WeChat"
    assert again["already_revoked"] is True
    assert (again["revoked_at"], again["reason"]) == (first["revoked_at"], "refund")


def test_redeemed_deleted_and_unknown_tickets_cannot_be_revoked(client: TestClient, gate_event: GateEvent) -> None:
    redeemed, deleted = gate_event.tickets(2)
    client.post("/v1/redemptions", json=scan(redeemed.code), headers=GATE)
    set_state(deleted.id, TicketState.DELETED)

    assert client.post(f"/v1/tickets/{redeemed.id}/revoke", headers=ADMIN).status_code == 409
    assert client.post(f"/v1/tickets/{deleted.id}/revoke", headers=ADMIN).status_code == 409
    assert client.post("/v1/tickets/999999/revoke", headers=ADMIN).status_code == 404
    assert client.post(f"/v1/tickets/{redeemed.id}/revoke", headers=GATE).status_code == 403
    assert ticket_state(redeemed.id) == TicketState.REDEEMED


def test_a_code_wechat_consumed_before_it_was_made_unavailable_is_a_disagreement(
    gate_event: GateEvent, fake: FakeWeChatControl
) -> None:
    (ticket,) = gate_event.claimed_in_wechat(1)
    revoke_ticket(ticket.id, "", queue_unavailable=lambda _: None)
    fake.consume_in_back_office(gate_event.card_id, ticket.code)

    assert sync_revocation(ticket.id, credential_store().card_api) == ConsumeSync.DISAGREES
    assert "consumed" in (revocation(ticket.id).detail or "")


def test_counts_by_gate_and_reason_with_disagreements(client: TestClient, gate_event: GateEvent) -> None:
    (let_in,) = gate_event.tickets(1)
    client.post("/v1/redemptions", json=scan(let_in.code, gate="north-1"), headers=GATE)
    client.post("/v1/redemptions", json=scan(let_in.code, gate="south-2"), headers=GATE)
    client.post("/v1/redemptions", json=scan(let_in.code, gate="south-2"), headers=GATE)
    client.post("/v1/redemptions", json=scan("NOSUCHCODE42", gate="north-1", card_id=gate_event.card_id), headers=GATE)

    response = client.get(f"/v1/events/{gate_event.event_id}/redemptions", headers=ADMIN)

    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 4
    assert body["by_result"] == {**dict.fromkeys(body["by_result"], 0), "ok": 1, "already_redeemed": 2, "invalid": 1}
    gates = {g["gate"]: g for g in body["by_gate"]}
    assert gates["north-1"]["total"] == 2 and gates["north-1"]["by_result"]["invalid"] == 1
    assert gates["south-2"]["by_result"]["already_redeemed"] == 2
    wait_until(
        lambda: client.get(f"/v1/events/{gate_event.event_id}/redemptions", headers=ADMIN).json()["disagreements"],
        what="the never-received code's consume to be refused by WeChat",
    )
    body = client.get(f"/v1/events/{gate_event.event_id}/redemptions", headers=ADMIN).json()
    assert body["wechat_consume"]["disagrees"] == 1
    (disagreement,) = body["disagreements"]
    assert disagreement["kind"] == "consume" and disagreement["code"] == let_in.code


def test_counts_need_an_admin_token_and_a_known_event(client: TestClient, gate_event: GateEvent) -> None:
    assert client.get(f"/v1/events/{gate_event.event_id}/redemptions", headers=GATE).status_code == 403
    assert client.get("/v1/events/999999/redemptions", headers=ADMIN).status_code == 404
