"""Consuming a multi-entry list's WeChat cards once the event is over (the list's
``consume_at_end`` option; the venue says when the event has ended).

Every ticket that entered through the list at least once and is still ``claimed`` moves to
``redeemed`` (a guarded UPDATE) and gets a redemption row at gate ``end-of-event`` whose WeChat
consume the caller queues with it, a chunk of redemptions per message
(``redemption_sync.queue_consumes``), each code consumed and retried as a gate's.
The row's nonce is derived from the list and ticket, so running this twice changes nothing;
its ``list_id`` is NULL, so it is not counted as an entry.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.services.checkin.lists import ListError, get_list
from models import ConsumeSync, Presence, Redemption, RedemptionResult, Ticket, TicketState

END_GATE = "end-of-event"


def consume_entered_tickets(session: Session, event_id: int, list_id: int, *, now: datetime | None = None) -> list[int]:
    """Redemption ids whose WeChat consumes the caller queues in the same transaction."""
    now = now or clock.now()
    checkin_list = get_list(session, event_id, list_id)
    if not checkin_list.consume_at_end:
        raise ListError(f"list {list_id} does not consume at the end of the event (consume_at_end is off)")
    tickets = session.execute(
        select(Ticket.id, Ticket.code, Ticket.card_id)
        .join(Presence, Presence.ticket_id == Ticket.id)
        .where(
            Presence.list_id == list_id,
            Presence.entries > 0,
            Ticket.event_id == event_id,
            Ticket.state == TicketState.CLAIMED,
        )
        .order_by(Ticket.id)
        .with_for_update(of=Ticket)
    ).all()
    if not tickets:
        return []
    session.execute(
        update(Ticket)
        .where(Ticket.id.in_([t.id for t in tickets]), Ticket.state == TicketState.CLAIMED)
        .values(state=TicketState.REDEEMED, redeemed_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    rows = [
        {
            "nonce": f"end-{list_id}-{t.id}",
            "code": t.code or "",
            "card_id": t.card_id,
            "event_id": event_id,
            "ticket_id": t.id,
            "gate": END_GATE,
            "result": RedemptionResult.OK,
            "consume_sync": ConsumeSync.PENDING,
            "consume_attempts": 0,
            "consume_in_doubt": 0,
            "created_at": now,
        }
        for t in tickets
    ]
    table = Redemption.__table__
    statement = insert(table).on_conflict_do_nothing(index_elements=["nonce"]).returning(table.c.id)
    return [row.id for row in session.execute(statement, rows)]
