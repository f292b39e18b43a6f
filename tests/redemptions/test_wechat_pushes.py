"""``record_wechat_consume``: what the push worker calls for ``user_consume_card``."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update

from cardpipe.db import session_scope
from cardpipe.services.redemptions import redeem_scan
from cardpipe.services.scan_answers import Answer, Scan
from cardpipe.services.wechat_consumes import record_wechat_consume
from models import ConsumeSync, Redemption, RedemptionResult, TicketState
from tests.redemptions.conftest import GateEvent, redemption_rows, set_state, ticket_state

AT = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)


def push(gate_event: GateEvent, code: str, source: str = "FROM_MP") -> None:
    with session_scope() as session:
        record_wechat_consume(
            session,
            event_id=gate_event.event_id,
            card_id=gate_event.card_id,
            code=code,
            consume_source=source,
            at=AT,
        )


def redeem(code: str, gate: str = "north-1", nonce: str = "gate-nonce-1") -> Answer:
    return redeem_scan(Scan(code, gate, nonce))


def test_a_code_consumed_in_the_back_office_is_redeemed_here_too(gate_event: GateEvent) -> None:
    (ticket,) = gate_event.tickets(1)

    push(gate_event, ticket.code, "FROM_MP")

    assert ticket_state(ticket.id) == TicketState.REDEEMED
    (row,) = redemption_rows()
    assert row.result == RedemptionResult.OK and row.gate == "wechat:FROM_MP"
    assert row.consume_sync == ConsumeSync.DISAGREES and "before any gate" in (row.detail or "")
    answer = redeem(ticket.code, gate="south-2")
    assert answer.result == RedemptionResult.ALREADY_REDEEMED
    assert answer.redeemed_gate == "wechat:FROM_MP" and answer.redeemed_at == AT


def test_a_repeated_push_records_nothing_more(gate_event: GateEvent) -> None:
    (ticket,) = gate_event.tickets(1)

    for _ in range(3):
        push(gate_event, ticket.code, "FROM_MOBILE_HELPER")

    assert len(redemption_rows()) == 1


def test_our_own_consume_echoed_back_is_not_a_disagreement(gate_event: GateEvent) -> None:
    (ticket,) = gate_event.tickets(1)
    answer = redeem(ticket.code)
    with session_scope() as session:  # the worker sent the consume and is still waiting for WeChat
        session.execute(
            update(Redemption)
            .where(Redemption.id == answer.redemption_id)
            .values(consume_attempts=1, consume_in_doubt=1)
        )

    push(gate_event, ticket.code, "FROM_API")

    (row,) = redemption_rows()
    assert row.consume_sync == ConsumeSync.DONE and row.consumed_at == AT and row.detail is None


def test_wechat_consuming_a_code_a_gate_let_in_before_our_consume_is_a_disagreement(gate_event: GateEvent) -> None:
    (ticket,) = gate_event.tickets(1)
    redeem(ticket.code, gate="north-1")

    push(gate_event, ticket.code, "FROM_MP")

    (row,) = redemption_rows()
    assert row.gate == "north-1" and row.consume_sync == ConsumeSync.DISAGREES
    assert "FROM_MP" in (row.detail or "") and "north-1" in (row.detail or "")


def test_a_consume_of_a_revoked_or_deleted_ticket_is_recorded_not_applied(gate_event: GateEvent) -> None:
    revoked, deleted = gate_event.tickets(2)
    set_state(revoked.id, TicketState.REVOKED)
    set_state(deleted.id, TicketState.DELETED)

    push(gate_event, revoked.code)
    push(gate_event, deleted.code)

    assert ticket_state(revoked.id) == TicketState.REVOKED and ticket_state(deleted.id) == TicketState.DELETED
    rows = {row.ticket_id: row for row in redemption_rows()}
    assert rows[revoked.id].result == RedemptionResult.REVOKED
    assert rows[deleted.id].result == RedemptionResult.DELETED
    assert {row.consume_sync for row in rows.values()} == {ConsumeSync.DISAGREES}


def test_a_consume_that_overtook_the_claim_signal_still_redeems(gate_event: GateEvent) -> None:
    (ticket,) = gate_event.tickets(1, state=TicketState.SERVED)

    push(gate_event, ticket.code, "FROM_MP")

    assert ticket_state(ticket.id) == TicketState.REDEEMED
    assert "still served" in (redemption_rows()[0].detail or "")


def test_a_consume_of_a_code_we_never_issued_is_recorded(gate_event: GateEvent) -> None:
    push(gate_event, "NOTOURS12345")

    (row,) = redemption_rows()
    assert row.ticket_id is None and row.event_id == gate_event.event_id
    assert row.result == RedemptionResult.INVALID and row.consume_sync == ConsumeSync.DISAGREES
