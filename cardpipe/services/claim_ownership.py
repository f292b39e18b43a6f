"""Whose order is it: a Mini Program caller names an order by its number, and finds it only if
it is theirs.

Ownership is the order's buyer MP openid within the session's mini program: anyone else's order is
simply not found (never "forbidden"), so an order number tells nothing about other buyers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, select
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


def owned_orders(session: Session, *refs: OrderRef) -> list[OwnedOrder]:
    """The caller's orders with those numbers (one per number, unless two events of the mini
    program reuse it). Every ref is the same caller's (one session's mini program and openid)."""
    callers = {(ref.mp_appid, ref.openid) for ref in refs}
    if len(callers) != 1:
        raise ValueError("owned_orders takes the refs of exactly one caller")
    ((mp_appid, openid),) = callers
    params = {"mp_appid": mp_appid, "openid": openid, "order_nos": list({ref.order_no for ref in refs})}
    return [OwnedOrder(*row) for row in session.execute(_OWNED_ORDERS, params)]


#: Built once: the statement is the same for every caller.
_OWNED_ORDERS = (
    select(Order.id, Order.order_no, Order.event_id, Order.ticket_count, OfficialAccount.appid, OfficialAccount.id)
    .join(Event, Event.id == Order.event_id)
    .join(MiniProgram, MiniProgram.id == Event.mini_program_id)
    .join(OfficialAccount, OfficialAccount.id == Event.official_account_id)
    .where(
        MiniProgram.appid == bindparam("mp_appid"),
        Order.order_no.in_(bindparam("order_nos", expanding=True)),
        Order.mp_openid == bindparam("openid"),
    )
    .order_by(Order.id)
)


class UnknownOrders(LookupError):
    """The caller has no order with some of the numbers given: nothing was done."""

    def __init__(self, order_nos: Collection[str]) -> None:
        super().__init__("no such order: " + ", ".join(sorted(order_nos)))
        self.order_nos = sorted(order_nos)


def all_owned_orders(session: Session, refs: Sequence[OrderRef]) -> list[OwnedOrder]:
    """:func:`owned_orders`, all or nothing: raises :class:`UnknownOrders` if any is missing."""
    owned = owned_orders(session, *refs)
    missing = {ref.order_no for ref in refs} - {order.order_no for order in owned}
    if missing:
        raise UnknownOrders(missing)
    return owned


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
