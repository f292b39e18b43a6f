"""``cardpipe redeem CODE --gate G``: the scanner-less gate."""

from __future__ import annotations

from typer.testing import CliRunner

from cardpipe.cli import app
from models import TicketState
from tests.redemptions.conftest import GateEvent, redemption_rows, ticket_state


def test_a_gate_without_a_scanner_redeems_by_typing_the_code(gate_event: GateEvent) -> None:
    (ticket,) = gate_event.tickets(1)
    runner = CliRunner()

    let_in = runner.invoke(app, ["redeem", ticket.code, "--gate", "desk-1"])
    again = runner.invoke(app, ["redeem", ticket.code, "--gate", "desk-2"])

    assert let_in.exit_code == 0, let_in.output
    assert "OK" in let_in.output
    assert again.exit_code == 1
    assert "already_redeemed" in again.output and "desk-1" in again.output
    assert ticket_state(ticket.id) == TicketState.REDEEMED


def test_the_same_nonce_repeats_the_answer(gate_event: GateEvent) -> None:
    (ticket,) = gate_event.tickets(1)
    runner = CliRunner()
    command = ["redeem", ticket.code, "--gate", "desk-1", "--nonce", "desk-1-scan-0001"]

    first, repeated = runner.invoke(app, command), runner.invoke(app, command)

    assert first.exit_code == repeated.exit_code == 0
    assert "repeated scan" in repeated.output
    assert len(redemption_rows()) == 1


def test_an_unusable_scan_exits_2(gate_event: GateEvent) -> None:
    result = CliRunner().invoke(app, ["redeem", "NOSUCHCODE42", "--gate", "desk-1", "--event-id", "999999"])

    assert result.exit_code == 2 and "no event 999999" in result.output
    assert redemption_rows() == []


def test_a_malformed_scan_exits_2_before_touching_anything(gate_event: GateEvent) -> None:
    result = CliRunner().invoke(app, ["redeem", "ABC", "--gate", "desk-1", "--nonce", "x" * 65])

    assert result.exit_code == 2 and "nonce" in result.output
    assert redemption_rows() == []
