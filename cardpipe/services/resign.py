"""Re-signing outstanding tickets with the current api_ticket.

A ticket that is ``ready`` or ``served`` and was signed by an older ticket version gets a new
cardExt (fresh nonce and timestamp). The UPDATE is guarded by state and version, so running it
twice, or racing a claim, changes nothing that is already current or already claimed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from cardpipe.services.ticket_signing import sign_card_ext
from models import Ticket, TicketState

OUTSTANDING = (TicketState.READY, TicketState.SERVED)


def resign_tickets(session: Session, ticket_ids: Sequence[int], *, api_ticket: str, version: int) -> int:
    """Re-sign those of ``ticket_ids`` still outstanding and older than ``version``; returns how
    many were re-signed. One SELECT and one executemany UPDATE, whatever the count."""
    rows = session.execute(
        select(Ticket.id, Ticket.card_id, Ticket.code).where(
            Ticket.id.in_(ticket_ids), Ticket.state.in_(OUTSTANDING), Ticket.ticket_version < version
        )
    ).all()
    if not rows:
        return 0
    now = datetime.now(UTC)
    params = []
    for ticket_id, card_id, code in rows:
        signed = sign_card_ext(api_ticket=api_ticket, card_id=card_id, code=code, outer_str=str(ticket_id))
        params.append(
            {
                "ticket_id": ticket_id,
                "card_ext": signed.card_ext,
                "nonce": signed.nonce,
                "timestamp": signed.timestamp,
                "version": version,
                "signed_at": now,
            }
        )
    statement = (
        update(Ticket.__table__)
        .where(
            Ticket.__table__.c.id == bindparam("ticket_id"),
            Ticket.__table__.c.state.in_(OUTSTANDING),
            Ticket.__table__.c.ticket_version < bindparam("version"),
        )
        .values(
            card_ext=bindparam("card_ext"),
            nonce=bindparam("nonce"),
            timestamp=bindparam("timestamp"),
            ticket_version=bindparam("version"),
            signed_at=bindparam("signed_at"),
            updated_at=bindparam("signed_at"),
        )
    )
    session.execute(statement, params)
    return len(params)
