"""A list that admits only some ticket classes: the others are ``not_on_list`` at its gates,
online and offline alike, entry and exit; the default list still admits every ticket."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cardpipe.cli import app
from cardpipe.db import session_scope
from cardpipe.services.checkin import offline_gate
from models import Direction, Order, RedemptionResult
from tests.redemptions.conftest import ADMIN, GATE, GateEvent, scan
from tests.venue.conftest import make_gate, make_list, scan_as


def _order_of_class(gate_event: GateEvent, ticket_class: str | None, order_no: str) -> GateEvent:
    """The same event, issuing tickets on a new order of ``ticket_class``."""
    with session_scope() as session:
        order = Order(
            event_id=gate_event.event_id,
            order_no=order_no,
            mp_openid="oMP-buyer",
            ticket_count=2,
            ticket_class=ticket_class,
        )
        session.add(order)
        session.flush()
        order_id = order.id
    return GateEvent(gate_event.world, gate_event.event_id, gate_event.card_id, order_id)


def _vip_list(client: TestClient, gate_event: GateEvent) -> tuple[dict[str, Any], dict[str, str]]:
    vip = make_list(client, gate_event.event_id, name="vip lounge", policy="multi", ticket_classes=["vip"])
    return vip, make_gate(client, gate_event.event_id, vip["id"], "lounge")


def test_a_list_of_vip_tickets_refuses_a_standard_ticket_online(client: TestClient, gate_event: GateEvent) -> None:
    vip_list, lounge = _vip_list(client, gate_event)
    assert vip_list["ticket_classes"] == ["vip"]
    (vip,) = _order_of_class(gate_event, "vip", "V-1").tickets(1)
    (standard,) = _order_of_class(gate_event, "standard", "S-1").tickets(1)
    (unclassed,) = gate_event.tickets(1)

    assert scan_as(client, lounge, vip.code)["result"] == "ok"
    refused = scan_as(client, lounge, standard.code)
    assert (refused["result"], refused["ok"]) == ("not_on_list", False)
    assert scan_as(client, lounge, unclassed.code)["result"] == "not_on_list"
    assert scan_as(client, lounge, standard.code, "exit")["result"] == "not_on_list"
    # The event's default list admits every ticket, whatever its class.
    response = client.post("/v1/redemptions", json=scan(standard.code), headers=GATE)
    assert response.json()["result"] == "ok"


def test_a_list_of_vip_tickets_refuses_a_standard_ticket_offline(client: TestClient, gate_event: GateEvent) -> None:
    _, lounge = _vip_list(client, gate_event)
    (vip,) = _order_of_class(gate_event, "vip", "V-1").tickets(1)
    (standard,) = _order_of_class(gate_event, "standard", "S-1").tickets(1)

    snap = client.get("/v1/gate/snapshot", headers=lounge).json()
    assert snap["list"]["ticket_classes"] == ["vip"]
    assert sorted(snap["ticket_classes"]["names"]) == ["standard", "vip"]
    assert len(snap["ticket_classes"]["of"]) == len(snap["states"])
    state = offline_gate.from_snapshot(snap)
    # A ticket of a new order arrives with the deltas, its class with it.
    (late_standard,) = _order_of_class(gate_event, "standard", "S-2").tickets(1)
    delta = client.get("/v1/gate/deltas", params={"cursor": snap["cursor"]}, headers=lounge).json()
    offline_gate.apply_deltas(state, delta)

    at = datetime.now(UTC)
    answers = [
        offline_gate.scan(state, code, Direction.ENTRY, at).result
        for code in (vip.code, standard.code, late_standard.code)
    ]
    assert answers == [RedemptionResult.OK, RedemptionResult.NOT_ON_LIST, RedemptionResult.NOT_ON_LIST]

    batches = offline_gate.upload_batches(state, 10)
    report = client.post("/v1/gate/scans", json={"scans": batches[0]}, headers=lounge).json()
    assert (report["recorded"], report["conflicts"]) == (3, 0)


def test_list_classes_are_checked_and_changed_through_the_admin_api(client: TestClient, gate_event: GateEvent) -> None:
    url = f"/v1/admin/events/{gate_event.event_id}/checkin-lists"
    for bad in ([], ["x" * 33], ["v\x01ip"], [1], "vip"):
        response = client.post(url, json={"name": "bad", "ticket_classes": bad}, headers=ADMIN)
        assert response.status_code == 422, (bad, response.text)
    made = make_list(client, gate_event.event_id, name="press", ticket_classes=["press", "vip", "press"])
    assert made["ticket_classes"] == ["press", "vip"]

    changed = client.put(f"{url}/{made['id']}", json={"name": "press"}, headers=ADMIN)
    assert changed.status_code == 200, changed.text
    assert changed.json()["ticket_classes"] is None


def test_cli_adds_a_list_of_some_classes(gate_event: GateEvent) -> None:
    runner = CliRunner()
    args = ["venue", "add-list", str(gate_event.event_id), "vip", "--class", "vip", "--class", "press"]

    result = runner.invoke(app, args)

    assert result.exit_code == 0, result.output
    assert "admits press, vip" in result.output
    bad = runner.invoke(app, ["venue", "add-list", str(gate_event.event_id), "odd", "--class", "x" * 40])
    assert bad.exit_code == 2 and "ticket_class must be" in bad.output
