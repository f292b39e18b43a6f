"""Revocation: an admin takes a ticket back. Later scans answer ``revoked``; a ticket that may
be held in WeChat (served or claimed) has its code made unavailable there by a queued
``code/unavailable`` (``workers.redemptions.make_code_unavailable``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.db import rowcount, session_scope
from cardpipe.services.redemptions import TICKET_COLUMNS, queue_quietly
from models import ConsumeSync, Revocation, Ticket, TicketState

REVOCABLE_STATES = (TicketState.PENDING, TicketState.READY, TicketState.SERVED, TicketState.CLAIMED)
#: A ticket revoked in one of these states may be in WeChat: its code is made unavailable.
_HANDED_OUT_STATES = (TicketState.SERVED, TicketState.CLAIMED)


class TicketNotFound(LookupError):
    pass


class NotRevocable(Exception):
    pass


@dataclass(frozen=True, slots=True)
class RevocationOutcome:
    ticket_id: int
    revoked_at: datetime
    reason: str
    wechat_sync: ConsumeSync
    already_revoked: bool

    @property
    def queue_unavailable(self) -> bool:
        return self.wechat_sync == ConsumeSync.PENDING and not self.already_revoked


def revoke(session: Session, ticket_id: int, reason: str = "", *, now: datetime | None = None) -> RevocationOutcome:
    """Take a ticket back (no commit): later scans answer ``revoked``. A ticket that may be in
    WeChat (served or claimed) gets its code made unavailable there, queued by the caller.
    Revoking a revoked ticket answers the first revocation and changes nothing."""
    now = now or clock.now()
    ticket = session.execute(TICKET_COLUMNS.where(Ticket.id == ticket_id).with_for_update()).one_or_none()
    if ticket is None:
        raise TicketNotFound(f"no ticket {ticket_id}")
    if ticket.state == TicketState.REVOKED:
        existing = session.scalars(select(Revocation).where(Revocation.ticket_id == ticket_id)).one()
        return RevocationOutcome(
            ticket_id, existing.requested_at, existing.reason, ConsumeSync(existing.wechat_sync), already_revoked=True
        )
    if ticket.state not in REVOCABLE_STATES:
        raise NotRevocable(f"ticket {ticket_id} is {ticket.state}")
    changed = session.execute(
        update(Ticket)
        .where(Ticket.id == ticket_id, Ticket.state == ticket.state)
        .values(state=TicketState.REVOKED, revoked_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if rowcount(changed) != 1:
        # Only without row locks (SQLite): the ticket moved meanwhile. Decide on what it is now.
        return revoke(session, ticket_id, reason, now=now)
    sync = ConsumeSync.PENDING if ticket.state in _HANDED_OUT_STATES else ConsumeSync.NOT_NEEDED
    session.execute(
        insert(Revocation).values(
            ticket_id=ticket_id,
            reason=reason,
            previous_state=ticket.state,
            wechat_sync=sync,
            attempts=0,
            requested_at=now,
        )
    )
    return RevocationOutcome(ticket_id, now, reason, sync, already_revoked=False)


def revoke_ticket(ticket_id: int, reason: str, *, queue_unavailable: Callable[[int], object]) -> RevocationOutcome:
    """:func:`revoke` in its own transaction, queueing ``code/unavailable`` after the commit."""
    with session_scope() as session:
        outcome = revoke(session, ticket_id, reason)
    if outcome.queue_unavailable:
        queue_quietly(queue_unavailable, ticket_id)
    return outcome
