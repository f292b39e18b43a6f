"""``cardpipe gate``: snapshot, offline scans decided locally with the server's rules, sync; and
``cardpipe venue`` to set lists and gates up."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cardpipe.cli import app
from models import TicketState
from tests.redemptions.conftest import GateEvent, redemption_rows, ticket_state
from tests.venue.conftest import make_gate, make_list, occupancy

runner = CliRunner()


def _gate(args: list[str], token: str, stdin: str = "") -> tuple[int, str]:
    result = runner.invoke(app, ["gate", *args], input=stdin, env={"CARDPIPE_GATE_TOKEN": token})
    return result.exit_code, result.output


def test_an_offline_gate_decides_alone_and_syncs_later(
    live_api: str, client: TestClient, gate_event: GateEvent, tmp_path: Path
) -> None:
    hall = make_list(client, gate_event.event_id, name="hall", policy="multi", entry_after_exit_only=True)
    token = make_gate(client, gate_event.event_id, hall["id"], "offline-1")["Authorization"].split()[1]
    a, b = gate_event.tickets(2)
    state = tmp_path / "gate.json"

    assert _gate(["snapshot", "--api", live_api, "--state", str(state)], token)[0] == 0
    assert a.code not in state.read_text()
    code, out = _gate(["offline", "--state", str(state)], token, f"{a.code}\n{a.code}\nNOSUCH\n")
    assert code == 1
    assert re.findall(r"^(OK|REFUSED) \S+: (\w+)", out, re.M) == [
        ("OK", "ok"),
        ("REFUSED", "already_inside"),
        ("REFUSED", "invalid"),
    ]
    assert _gate(["offline", "--state", str(state), "--direction", "exit"], token, f"{a.code}\n")[0] == 0
    assert _gate(["offline", "--state", str(state)], token, f"{a.code}\n{b.code}\n")[0] == 0
    assert len(json.loads(state.read_text())["pending"]) == 6

    code, out = _gate(["sync", "--api", live_api, "--state", str(state)], token)

    assert code == 0, out
    assert "6 scans recorded, 0 conflicts, 0 still pending" in out
    assert all(row.offline for row in redemption_rows())
    counts = occupancy(client, gate_event.event_id)
    assert (counts["inside_now"], counts["entries"], counts["reentries"], counts["exits"]) == (2, 3, 1, 1)
    assert _gate(["sync", "--api", live_api, "--state", str(state)], token)[1].count("0 scans recorded") == 1
    assert ticket_state(a.id) == TicketState.CLAIMED


def test_an_online_gate_and_the_venue_commands(live_api: str, client: TestClient, gate_event: GateEvent) -> None:
    added = runner.invoke(app, ["venue", "add-list", str(gate_event.event_id), "main", "--capacity", "1"])
    assert added.exit_code == 0, added.output
    list_id = int(added.output.split()[1])
    made = runner.invoke(app, ["venue", "add-gate", str(gate_event.event_id), str(list_id), "door"])
    token = made.output.strip().splitlines()[-1]
    a, b = gate_event.tickets(2)

    code, out = _gate(["online", "--api", live_api], token, f"{a.code}\n{b.code}\n")

    assert code == 1 and "REFUSED" in out and "capacity_full" in out
    assert ticket_state(a.id) == TicketState.REDEEMED
    shown = runner.invoke(app, ["venue", "lists", str(gate_event.event_id)])
    assert "inside now (each ticket once): 1" in shown.output
    refused = runner.invoke(app, ["venue", "add-list", str(gate_event.event_id), "main"])
    assert refused.exit_code == 2 and "already has a list named 'main'" in refused.output
