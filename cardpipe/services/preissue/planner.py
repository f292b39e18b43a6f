"""The pre-issue planner: make WeChat's stock cover the event's tickets, then hand its orders out in
chunks of about ``preissue_chunk_tickets`` tickets (order ids only, one message per chunk).

Safe to run any number of times: the totals are recounted under the event's row lock, the stock is
raised by exactly the shortfall, and ``stock_covered`` is never lowered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import psycopg
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.services.codes import new_codes
from cardpipe.services.events import UnknownEvent, event_oa_appid
from cardpipe.services.preissue import CodeSource, PreissueError
from cardpipe.services.preissue.stock import card_stock, deposit_codes
from cardpipe.services.preissue.tracking import missing_filter
from models import RECEIVED_STATES, CodeMode, Event, EventState, Order, Ticket
from wechat.client import CardApi

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanOutcome:
    orders_sent: int
    chunks_sent: int
    stock_before: int
    stock_increase: int
    codes_deposited: int


@dataclass(frozen=True)
class _Plan:
    appid: str
    card_id: str
    code_mode: str
    code_length: int
    code_alphabet: str
    tickets_total: int
    tickets_received: int
    orders_all_missing: bool

    @property
    def tickets_needing_stock(self) -> int:
        return self.tickets_total - self.tickets_received


def _recount(session: Session, event_id: int) -> _Plan:
    """Lock the event row (an import in progress finishes first), recount the totals exactly
    and store them, and read what the planner needs."""
    event = session.scalars(select(Event).where(Event.id == event_id).with_for_update()).one_or_none()
    if event is None:
        raise UnknownEvent(f"no event {event_id}")
    if event.card_id is None:
        raise PreissueError(f"event {event_id} has no card")
    orders, tickets = session.execute(
        select(func.count(), func.coalesce(func.sum(Order.ticket_count), 0)).where(Order.event_id == event_id)
    ).one()
    received = session.scalar(
        select(func.count()).where(Ticket.event_id == event_id, Ticket.state.in_(RECEIVED_STATES))
    )
    event.orders_total, event.tickets_total = int(orders), int(tickets)
    return _Plan(
        appid=event_oa_appid(session, event),
        card_id=event.card_id,
        code_mode=event.code_mode,
        code_length=event.code_length,
        code_alphabet=event.code_alphabet,
        tickets_total=int(tickets),
        tickets_received=int(received or 0),
        orders_all_missing=event.orders_complete == 0,
    )


def _stream_orders(session: Session, event_id: int, only_missing: bool) -> Iterator[tuple[int, int]]:
    """(id, ticket_count) of the event's orders (or of those missing tickets), in id order,
    without holding them all: on PostgreSQL through a server-side cursor, as plain tuples."""
    condition = missing_filter(event_id, 0) if only_missing else Order.event_id == event_id
    query = select(Order.id, Order.ticket_count).where(condition).order_by(Order.id)
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        yield from ((row.id, row.ticket_count) for row in session.execute(query.execution_options(yield_per=10_000)))
        return
    compiled = query.compile(connection, compile_kwargs={"literal_binds": True})
    driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    with driver.cursor(name="preissue_orders") as cursor:
        cursor.itersize = 10_000
        cursor.execute(str(compiled))
        yield from cursor


def chunk_orders(orders: Iterable[tuple[int, int]], chunk_tickets: int) -> Iterator[list[int]]:
    """Whole orders, about ``chunk_tickets`` tickets per chunk."""
    chunk: list[int] = []
    tickets = 0
    for order_id, count in orders:
        chunk.append(order_id)
        tickets += count
        if tickets >= chunk_tickets:
            yield chunk
            chunk, tickets = [], 0
    if chunk:
        yield chunk


def plan_preissue(
    event_id: int,
    *,
    sessions: Callable[[], AbstractContextManager[Session]],
    card_api: Callable[[str], CardApi],
    send_chunk: Callable[[int, list[int]], None],
    chunk_tickets: int,
    stock_lock: AbstractContextManager[object] | None = None,
    draw_codes: CodeSource = new_codes,
) -> PlanOutcome:
    """Make the stock cover the event's tickets, then send its orders in chunks.

    ``stock_lock`` is held around the stock read-and-raise (and deposits), so two planners never
    both raise by the same shortfall. No database transaction stays open across WeChat calls.
    """
    with sessions() as session:
        plan = _recount(session, event_id)
    api = card_api(plan.appid)
    deposited = 0
    with stock_lock or nullcontext():
        if plan.code_mode == CodeMode.DEPOSIT:
            deposited = deposit_codes(
                api,
                plan.card_id,
                plan.tickets_total,
                lambda count: draw_codes(count, plan.code_length, plan.code_alphabet),
            )
        stock = card_stock(api, plan.card_id)
        shortfall = max(0, plan.tickets_needing_stock - stock)
        if shortfall:
            api.modify_stock(plan.card_id, increase=shortfall)
        with sessions() as session:
            _record_stock(session, event_id, stock + shortfall, plan.tickets_received)
            _record_stock_covered(session, event_id, plan.tickets_total)
    log.info(
        "event %s: stock %d raised by %d for %d tickets (%d already received), %d codes deposited",
        event_id,
        stock,
        shortfall,
        plan.tickets_total,
        plan.tickets_received,
        deposited,
    )
    orders = chunks = 0
    with sessions() as session:
        for chunk in chunk_orders(_stream_orders(session, event_id, not plan.orders_all_missing), chunk_tickets):
            send_chunk(event_id, chunk)
            orders += len(chunk)
            chunks += 1
        _finish_if_complete(session, event_id)
    log.info("event %s: %d orders sent in %d chunks", event_id, orders, chunks)
    return PlanOutcome(orders, chunks, stock, shortfall, deposited)


def _record_stock(session: Session, event_id: int, stock: int, received: int) -> None:
    session.execute(
        update(Event)
        .where(Event.id == event_id)
        .values(wechat_stock=stock, wechat_stock_received=received, wechat_stock_at=clock.now())
    )


def _record_stock_covered(session: Session, event_id: int, tickets: int) -> None:
    """WeChat's stock now covers ``tickets`` tickets of the event (never lowered: a later,
    smaller count is an older planner's)."""
    session.execute(
        update(Event)
        .where(Event.id == event_id, Event.stock_covered < tickets)
        .values(stock_covered=tickets)
        .execution_options(synchronize_session=False)
    )


def _finish_if_complete(session: Session, event_id: int) -> None:
    session.execute(
        update(Event)
        .where(
            Event.id == event_id,
            Event.state == EventState.PREISSUING,
            Event.orders_complete >= Event.orders_total,
            Event.stock_covered >= Event.tickets_total,
        )
        .values(state=EventState.ISSUED)
        .execution_options(synchronize_session=False)
    )
