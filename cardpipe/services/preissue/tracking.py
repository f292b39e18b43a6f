"""Where an event's pre-issue stands: starting it, its progress, and the work still missing.

Every function here reads or makes one guarded update; none calls WeChat. Starting pre-issue
records the planner's intent in the same transaction (``services.outbox``), so a started event
always has a planner on its way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.services import outbox
from cardpipe.services.events import UnknownEvent, get_event
from cardpipe.services.outbox import Intent
from cardpipe.services.preissue import PreissueError
from models import Event, EventState, Order, Ticket, TicketState


@dataclass(frozen=True)
class Progress:
    event_id: int
    state: str
    orders_total: int
    orders_complete: int
    tickets_total: int
    tickets_issued: int
    stock_covered: int
    preissue_started_at: datetime | None
    #: Tickets per state; None when not asked for (it is a count over every ticket of the event).
    tickets_by_state: dict[str, int] | None = None


def start_preissue(session: Session, event_id: int) -> Event:
    """``draft`` → ``preissuing``; an ``issued`` event with orders imported since goes back to
    ``preissuing``. The caller queues the planner after the commit."""
    event = get_event(session, event_id)
    if event.card_id is None:
        raise PreissueError(f"event {event_id} has no card")
    now = clock.now()
    session.execute(
        update(Event)
        .where(
            Event.id == event_id,
            (Event.state == EventState.DRAFT)
            | ((Event.state == EventState.ISSUED) & (Event.orders_complete < Event.orders_total)),
        )
        .values(state=EventState.PREISSUING, preissue_started_at=now)
        .execution_options(synchronize_session=False)
    )
    session.refresh(event)
    return event


def start_and_queue_planner(session: Session, event_id: int, *, planner_actor: str) -> tuple[str, Intent]:
    """:func:`start_preissue`, and in the same transaction the intent to run the planner
    (``planner_actor``, with the event id): the caller sends the intent after the commit.
    Returns the event's state and the intent."""
    event = start_preissue(session, event_id)
    return event.state, outbox.add(session, planner_actor, event_id)


def preissue_progress(session: Session, event_id: int, *, by_state: bool = True) -> Progress:
    event = session.get(Event, event_id)
    if event is None:
        raise UnknownEvent(f"no event {event_id}")
    counts: dict[str, int] | None = None
    if by_state:
        counts = {state.value: 0 for state in TicketState}
        rows = session.execute(
            select(Ticket.state, func.count()).where(Ticket.event_id == event_id).group_by(Ticket.state)
        )
        counts.update({state: count for state, count in rows})
    return Progress(
        event_id=event.id,
        state=event.state,
        orders_total=event.orders_total,
        orders_complete=event.orders_complete,
        tickets_total=event.tickets_total,
        tickets_issued=event.tickets_issued,
        stock_covered=event.stock_covered,
        preissue_started_at=event.preissue_started_at,
        tickets_by_state=counts,
    )


def missing_filter(event_id: int, after_id: int) -> Any:
    present = select(func.count()).where(Ticket.order_id == Order.id).scalar_subquery()
    return and_(Order.event_id == event_id, Order.id > after_id, Order.ticket_count > present)


def orders_missing_tickets(session: Session, event_id: int, limit: int, *, after_id: int = 0) -> list[int]:
    """Ids of the event's orders without all their tickets, in id order from ``after_id``: the
    pending pre-issue work (the scheduler re-queues these through ``issue_orders``)."""
    query = select(Order.id).where(missing_filter(event_id, after_id)).order_by(Order.id).limit(limit)
    return list(session.scalars(query))


def stock_uncovered(session: Session, event_id: int) -> bool:
    """Whether the event has tickets WeChat's stock was not (yet) raised for: its planner must run."""
    row = session.execute(select(Event.stock_covered, Event.tickets_total).where(Event.id == event_id)).one_or_none()
    return row is not None and row.stock_covered < row.tickets_total
