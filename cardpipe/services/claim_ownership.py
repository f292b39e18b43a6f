"""Whose order is it: a Mini Program caller names an order by its number, and finds it only if
it is theirs.

Ownership is the order's buyer MP openid within the session's mini program: anyone else's order is
simply not found (never "forbidden"), so an order number tells nothing about other buyers.

The lookups are statements built once, on the tables (no ORM entity: the rows are plain tuples),
with the order numbers an expanding parameter; they run on a ``Session`` or a ``Connection``.
:func:`all_owned_orders_with_tickets` reads the orders' tickets in the same round trip (what a
claim builds its payload from, and a result that spent some finds their nonces in).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from cardpipe.services.claim_cache import record_key
from models import (
    Event,
    MiniProgram,
    OfficialAccount,
    Order,
    Ticket,
    TicketState,
)

Executor = Session | Connection

_orders = Order.__table__
_events = Event.__table__
_mini_programs = MiniProgram.__table__
_accounts = OfficialAccount.__table__
_tickets = Ticket.__table__


@dataclass(frozen=True, slots=True)
class OrderRef:
    """How a client names its order: the order number, within its session's mini program and
    MP openid. Ownership is the order's buyer openid: anyone else's order is simply not found."""

    mp_appid: str
    openid: str
    order_no: str

    @property
    def cache_key(self) -> str:
        return record_key(self.mp_appid, self.openid, self.order_no)


@dataclass(frozen=True, slots=True)
class OwnedOrder:
    id: int
    order_no: str
    event_id: int
    ticket_count: int
    oa_appid: str
    official_account_id: int


class OrderTicket(NamedTuple):
    """A ticket of an owned order, as a claim or a result needs it."""

    id: int
    order_id: int
    state: str
    card_id: str
    #: The signed cardExt, the card ticket version that signed it and its nonce (None until issued).
    card_ext: str | None
    ticket_version: int | None
    nonce: str | None


class UnknownOrders(LookupError):
    """The caller has no order with some of the numbers given: nothing was done."""

    def __init__(self, order_nos: Collection[str]) -> None:
        super().__init__("no such order: " + ", ".join(sorted(order_nos)))
        self.order_nos = sorted(order_nos)


def owned_orders(session: Executor, *refs: OrderRef) -> list[OwnedOrder]:
    """The caller's orders with those numbers (one per number, unless two events of the mini
    program reuse it). Every ref is the same caller's (one session's mini program and openid)."""
    return [OwnedOrder(*row) for row in session.execute(_OWNED_ORDERS, _params(refs))]


def all_owned_orders(session: Executor, refs: Sequence[OrderRef]) -> list[OwnedOrder]:
    """:func:`owned_orders`, all or nothing: raises :class:`UnknownOrders` if any is missing."""
    owned = owned_orders(session, *refs)
    _all_found(refs, owned)
    return owned


def all_owned_orders_with_tickets(
    session: Executor, refs: Sequence[OrderRef]
) -> tuple[list[OwnedOrder], dict[int, list[OrderTicket]]]:
    """:func:`all_owned_orders` and, in the same round trip, order id → its tickets in seat order
    (an order without any has none in the map)."""
    owned: dict[int, OwnedOrder] = {}
    tickets: dict[int, list[OrderTicket]] = defaultdict(list)
    for row in session.execute(_OWNED_WITH_TICKETS, _params(refs)):
        if row[0] not in owned:
            owned[row[0]] = OwnedOrder(*row[:6])
        if row[6] is not None:
            tickets[row[0]].append(OrderTicket._make(row[6:]))
    orders = list(owned.values())
    _all_found(refs, orders)
    return orders, tickets


def tickets_of(session: Executor, order_ids: Collection[int]) -> dict[int, list[OrderTicket]]:
    """order id → its tickets, in seat order."""
    tickets: dict[int, list[OrderTicket]] = defaultdict(list)
    if order_ids:
        for row in session.execute(_TICKETS_OF, {"order_ids": list(order_ids)}):
            tickets[row[1]].append(OrderTicket._make(row))
    return tickets


def _params(refs: Sequence[OrderRef]) -> dict[str, object]:
    callers = {(ref.mp_appid, ref.openid) for ref in refs}
    if len(callers) != 1:
        raise ValueError("owned_orders takes the refs of exactly one caller")
    ((mp_appid, openid),) = callers
    return {"mp_appid": mp_appid, "openid": openid, "order_nos": list({ref.order_no for ref in refs})}


def _all_found(refs: Sequence[OrderRef], owned: list[OwnedOrder]) -> None:
    missing = {ref.order_no for ref in refs} - {order.order_no for order in owned}
    if missing:
        raise UnknownOrders(missing)


_OWNED_COLUMNS = (
    _orders.c.id,
    _orders.c.order_no,
    _orders.c.event_id,
    _orders.c.ticket_count,
    _accounts.c.appid,
    _accounts.c.id,
)
_TICKET_COLUMNS = (
    _tickets.c.id,
    _tickets.c.order_id,
    _tickets.c.state,
    _tickets.c.card_id,
    _tickets.c.card_ext,
    _tickets.c.ticket_version,
    _tickets.c.nonce,
)
_OWNED_FROM = (
    _orders.join(_events, _events.c.id == _orders.c.event_id)
    .join(_mini_programs, _mini_programs.c.id == _events.c.mini_program_id)
    .join(_accounts, _accounts.c.id == _events.c.official_account_id)
)
_OWNED_WHERE = (
    _mini_programs.c.appid == bindparam("mp_appid"),
    _orders.c.order_no.in_(bindparam("order_nos", expanding=True)),
    _orders.c.mp_openid == bindparam("openid"),
)
#: Built once: the statements are the same for every caller.
_OWNED_ORDERS = select(*_OWNED_COLUMNS).select_from(_OWNED_FROM).where(*_OWNED_WHERE).order_by(_orders.c.id)
#: The same, one row per ticket of each order (one with no ticket for an order that has none).
_OWNED_WITH_TICKETS = (
    select(*_OWNED_COLUMNS, *_TICKET_COLUMNS)
    .select_from(_OWNED_FROM.outerjoin(_tickets, _tickets.c.order_id == _orders.c.id))
    .where(*_OWNED_WHERE)
    .order_by(_orders.c.id, _tickets.c.seq)
)
_TICKETS_OF = (
    select(*_TICKET_COLUMNS)
    .where(_tickets.c.order_id.in_(bindparam("order_ids", expanding=True)))
    .order_by(_tickets.c.order_id, _tickets.c.seq)
)


def orders_to_issue(session: Session, orders: list[OwnedOrder]) -> list[tuple[int, int]]:
    """(event_id, order_id) of the orders with fewer issued tickets than they are owed."""
    issued = Counter(
        session.scalars(
            select(Ticket.order_id).where(
                Ticket.order_id.in_([o.id for o in orders]),
                Ticket.state != TicketState.PENDING,
                Ticket.card_ext.is_not(None),
                Ticket.ticket_version.is_not(None),
            )
        )
    )
    return [(o.event_id, o.id) for o in orders if issued[o.id] < o.ticket_count]


def cache_keys(session: Session, order_ids: Collection[int]) -> list[str]:
    """The poll records showing these orders (to invalidate after a change)."""
    if not order_ids:
        return []
    rows = session.execute(
        select(MiniProgram.appid, Order.mp_openid, Order.order_no)
        .join(Event, Event.id == Order.event_id)
        .join(MiniProgram, MiniProgram.id == Event.mini_program_id)
        .where(Order.id.in_(set(order_ids)))
    ).all()
    return [record_key(*row) for row in rows]
