"""The claim transitions of a ticket: what serving a poll payload, the client callback and
WeChat's pushes change.

State machine (architecture page)::

    ready ──serve──▶ served ──client ok / user_get_card──▶ claimed ──user_del_card──▶ deleted

``serve`` happens once, when a poll payload is first built for the ticket (a cache fill), so the
common poll — a cache hit — writes nothing. Whichever of the client callback and ``user_get_card``
comes first claims the ticket; the other only records its confirmation flag. Every change is one
guarded ``UPDATE … WHERE state IN (…)``: a repeated or late signal matches no row and changes
nothing, in any order.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum

from sqlalchemy import ColumnElement, Connection, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.db import rowcount
from models import (
    CLAIMABLE_STATES,
    RECEIVED_STATES,
    Ticket,
    TicketState,
)

#: user_del_card may overtake user_get_card's processing, so a served ticket can go straight there.
DELETABLE = (TicketState.READY, TicketState.SERVED, TicketState.CLAIMED)


class Signal(StrEnum):
    CLIENT = "client"
    WECHAT = "wechat"


class ClaimOutcome(StrEnum):
    #: ready/served → claimed: this signal came first.
    CLAIMED = "claimed"
    #: Already claimed (or later) by the other signal: this one's confirmation is recorded.
    CONFIRMED = "confirmed"
    #: This signal had already confirmed the ticket: nothing changed.
    DUPLICATE = "duplicate"
    #: No issued ticket has that id, card and code.
    UNMATCHED = "unmatched"


def serve(session: Session | Connection, ticket_ids: Collection[int]) -> int:
    """ready → served; returns how many moved."""
    if not ticket_ids:
        return 0
    now = clock.now()
    return rowcount(session.execute(_SERVE, {"ticket_ids": list(ticket_ids), "now": now}))


_tickets = Ticket.__table__
#: Built once, on the table (a Session runs an ORM entity's UPDATE through its bulk machinery):
#: serving is part of every cache fill.
_SERVE = (
    update(_tickets)
    .where(_tickets.c.id.in_(bindparam("ticket_ids", expanding=True)), _tickets.c.state == TicketState.READY)
    .values(
        state=TicketState.SERVED,
        served_at=bindparam("now", type_=_tickets.c.served_at.type),
        updated_at=bindparam("now", type_=_tickets.c.updated_at.type),
    )
)


def confirm_claim(
    session: Session,
    *,
    ticket_id: int,
    card_id: str,
    code: str,
    signal: Signal,
    oa_openid: str | None = None,
    unionid: str | None = None,
) -> ClaimOutcome:
    """Record that ``signal`` saw ticket ``ticket_id`` (card ``card_id``, code ``code``) reach the
    user. A deposit-mode ticket learns its code here; WeChat's push also tells the holder's OA
    openid and unionid (recorded whatever the state)."""
    flag = Ticket.confirmed_by_client if signal == Signal.CLIENT else Ticket.confirmed_by_wechat
    matches: list[ColumnElement[bool]] = [
        Ticket.id == ticket_id,
        Ticket.card_id == card_id,
        or_(Ticket.code == code, Ticket.code.is_(None)),
    ]
    now = clock.now()
    values: dict[str, object] = {flag.key: True, "code": func.coalesce(Ticket.code, code), "updated_at": now}
    if signal == Signal.WECHAT:
        values["confirmed_at"] = now
    if oa_openid:
        values["oa_openid"] = oa_openid
    if unionid:
        values["unionid"] = unionid

    def guarded(*where: ColumnElement[bool], **extra: object) -> int:
        statement = update(Ticket).where(*matches, *where).values({**values, **extra})
        return rowcount(session.execute(statement.execution_options(synchronize_session=False)))

    if guarded(Ticket.state.in_(CLAIMABLE_STATES), state=TicketState.CLAIMED, claimed_at=now):
        return ClaimOutcome.CLAIMED
    if guarded(Ticket.state.in_(RECEIVED_STATES), flag.is_(False), claimed_at=func.coalesce(Ticket.claimed_at, now)):
        return ClaimOutcome.CONFIRMED
    already = session.execute(select(flag).where(*matches, Ticket.state.in_(RECEIVED_STATES))).scalar_one_or_none()
    return ClaimOutcome.DUPLICATE if already else ClaimOutcome.UNMATCHED


def record_client_report(session: Session, *, ticket_id: int, card_id: str) -> ClaimOutcome:
    """The client reports a ticket that WeChat's ``user_get_card`` already confirmed: its flag is
    recorded (CONFIRMED), or was already (DUPLICATE); a ticket of another card is UNMATCHED."""
    now = clock.now()
    matches = (Ticket.id == ticket_id, Ticket.card_id == card_id, Ticket.confirmed_by_wechat.is_(True))
    changed = rowcount(
        session.execute(
            update(Ticket)
            .where(*matches, Ticket.state.in_(RECEIVED_STATES), Ticket.confirmed_by_client.is_(False))
            .values(confirmed_by_client=True, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    )
    if changed:
        return ClaimOutcome.CONFIRMED
    known = session.execute(select(Ticket.id).where(*matches)).scalar_one_or_none()
    return ClaimOutcome.DUPLICATE if known is not None else ClaimOutcome.UNMATCHED


def delete(session: Session, *, event_id: int, code: str) -> list[int]:
    """The user deleted the event's card with ``code`` in WeChat: → deleted. Returns the orders
    whose ticket moved."""
    now = clock.now()
    result = session.execute(
        update(Ticket)
        .where(Ticket.event_id == event_id, Ticket.code == code, Ticket.state.in_(DELETABLE))
        .values(state=TicketState.DELETED, deleted_at=now, updated_at=now)
        .returning(Ticket.order_id)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars())
