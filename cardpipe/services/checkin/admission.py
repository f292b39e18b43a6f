"""A scan at an online gate, decided by the list's rules and applied, under the ticket's row lock.

The caller (``services.redemptions.redeem``) has locked the scanned ticket's row and checked it
belongs to the gate's event; here the list is found (the gate's own, or the one a registered gate
name picks, or the event's default), the ticket's history on it is read, :func:`rules.decide`
answers, and an admitted scan is applied in the same transaction (:func:`admit` writes it
statement by statement; on PostgreSQL :func:`plan` hands the same changes to the caller, which
writes them with the scan's record in one statement):

- a ``single`` entry moves the ticket ``claimed → redeemed`` (a guarded UPDATE; without row locks,
  on SQLite, losing that race re-decides on what the winner left);
- the ticket's presence row on the list takes the new history (an upsert: the ticket lock makes
  it race-free);
- a list with a capacity keeps ``inside_now`` exact: entries and exits through it lock its row
  (after the ticket's, always in that order) and change the counter by what the scan changed.

A ticket inside counts once per list and once per event whatever gate it used (presence is per
ticket, not per gate).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Row, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cardpipe.services.checkin import rules
from cardpipe.services.checkin.lists import default_list
from models import (
    CheckinList,
    Direction,
    Event,
    Gate,
    ListPolicy,
    Order,
    Presence,
    RedemptionResult,
    Ticket,
    TicketState,
)
from models.base import UTCDateTime

_lists = CheckinList.__table__
_events = Event.__table__
_gates = Gate.__table__
_orders = Order.__table__
_presence = Presence.__table__
_tickets = Ticket.__table__

_LIST_COLUMN_LIST = (
    _lists.c.id,
    _lists.c.event_id,
    _lists.c.policy,
    _lists.c.max_entries,
    _lists.c.max_per_day,
    _lists.c.entry_after_exit_only,
    _lists.c.window_start,
    _lists.c.window_end,
    _lists.c.capacity,
    _lists.c.ticket_classes,
    _events.c.timezone,
)
_LIST_COLUMNS = select(*_LIST_COLUMN_LIST).join(_events, _events.c.id == _lists.c.event_id)
#: The scanned ticket's class (its order's).
_TICKET_CLASS = (
    select(_orders.c.ticket_class)
    .join(_tickets, _tickets.c.order_id == _orders.c.id)
    .where(_tickets.c.id == bindparam("ticket_id"))
    .scalar_subquery()
    .label("ticket_class")
)
#: The same, with the scanned ticket's class and history on the list (one round trip on the
#: gate's path).
_SCAN_COLUMNS = (
    select(
        *_LIST_COLUMN_LIST,
        _TICKET_CLASS,
        _presence.c.entries,
        _presence.c.day,
        _presence.c.day_entries,
        _presence.c.inside,
    )
    .join(_events, _events.c.id == _lists.c.event_id)
    .outerjoin(_presence, (_presence.c.list_id == _lists.c.id) & (_presence.c.ticket_id == bindparam("ticket_id")))
)
#: The list a gate name picks in an event, else the event's default (non-default sorts first).
_GATES_LIST = (
    _lists.c.event_id == bindparam("event_id"),
    _lists.c.is_default
    | _lists.c.id.in_(
        select(_gates.c.list_id).where(_gates.c.event_id == bindparam("event_id"), _gates.c.name == bindparam("gate"))
    ),
)
_LIST_BY_ID = _LIST_COLUMNS.where(_lists.c.id == bindparam("list_id"))
_LIST_FOR_GATE = _LIST_COLUMNS.where(*_GATES_LIST).order_by(_lists.c.is_default).limit(1)
_SCAN_BY_LIST_ID = _SCAN_COLUMNS.where(_lists.c.id == bindparam("list_id"))
_SCAN_FOR_GATE = _SCAN_COLUMNS.where(*_GATES_LIST).order_by(_lists.c.is_default).limit(1)
_LOCK_LIST = select(_lists.c.inside_now).where(_lists.c.id == bindparam("list_id")).with_for_update()
_TICKET_STATE = select(_tickets.c.state).where(_tickets.c.id == bindparam("ticket_id"))
_REDEEM = (
    update(_tickets)
    .where(_tickets.c.id == bindparam("ticket_id"), _tickets.c.state == TicketState.CLAIMED)
    .values(state=TicketState.REDEEMED, redeemed_at=bindparam("at", type_=UTCDateTime), updated_at=bindparam("at"))
)
_MOVE_INSIDE = (
    update(_lists)
    .where(_lists.c.id == bindparam("list_id"))
    .values(inside_now=_lists.c.inside_now + bindparam("change"))
)


@dataclass(frozen=True, slots=True)
class Admission:
    result: RedemptionResult
    list_id: int
    single_use: bool
    direction: Direction


@dataclass(frozen=True, slots=True)
class ListView:
    """A list's rules as the gate applies them."""

    list_id: int
    event_id: int
    rules: rules.Rules

    @property
    def single_use(self) -> bool:
        return self.rules.policy == ListPolicy.SINGLE


def _view(row: Row[*tuple[Any, ...]]) -> ListView:
    return ListView(
        row.id,
        row.event_id,
        rules.Rules(
            policy=ListPolicy(row.policy),
            max_entries=row.max_entries,
            max_per_day=row.max_per_day,
            entry_after_exit_only=row.entry_after_exit_only,
            window_start=row.window_start,
            window_end=row.window_end,
            capacity=row.capacity,
            timezone=row.timezone,
            ticket_classes=None if row.ticket_classes is None else frozenset(row.ticket_classes),
        ),
    )


def list_for_scan(session: Session, *, event_id: int, list_id: int | None, gate: str) -> ListView:
    """The gate's own list (``list_id``, from its token), else the list its name is registered
    for in the ticket's event, else that event's default list (made if missing)."""
    conn = session.connection()
    if list_id is not None:
        return _view(conn.execute(_LIST_BY_ID, {"list_id": list_id}).one())
    row = conn.execute(_LIST_FOR_GATE, {"event_id": event_id, "gate": gate}).one_or_none()
    if row is None:
        default_list(session, event_id)
        row = conn.execute(_LIST_FOR_GATE, {"event_id": event_id, "gate": gate}).one()
    return _view(row)


def _scan_view(
    session: Session, ticket: Row[*tuple[Any, ...]], *, list_id: int | None, gate: str
) -> tuple[ListView, rules.History, str | None]:
    """The deciding list (as :func:`list_for_scan` finds it), the ticket's history on it and its class."""
    conn = session.connection()
    params = {"ticket_id": ticket.id, "event_id": ticket.event_id, "gate": gate, "list_id": list_id}
    statement = _SCAN_BY_LIST_ID if list_id is not None else _SCAN_FOR_GATE
    row = conn.execute(statement, params).one_or_none()
    if row is None and list_id is None:
        default_list(session, ticket.event_id)
        row = conn.execute(statement, params).one()
    if row is None:
        raise LookupError(f"no check-in list {list_id}")
    history = rules.History()
    if row.entries is not None:
        history = rules.History(entries=row.entries, day=row.day, day_entries=row.day_entries, inside=bool(row.inside))
    return _view(row), history, row.ticket_class


@cache
def upsert_statement(dialect: str) -> Any:
    """INSERT … ON CONFLICT (ticket_id, list_id) DO UPDATE of presence rows (one or many)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(_presence)
    changing = ("inside", "entries", "day", "day_entries", "last_scan_at", "updated_at")
    return statement.on_conflict_do_update(
        index_elements=["ticket_id", "list_id"], set_={name: statement.excluded[name] for name in changing}
    )


def presence_row(
    *, ticket_id: int, list_id: int, event_id: int, history: rules.History, at: datetime, now: datetime
) -> dict[str, Any]:
    return {
        "ticket_id": ticket_id,
        "list_id": list_id,
        "event_id": event_id,
        "inside": history.inside,
        "entries": history.entries,
        "day": history.day,
        "day_entries": history.day_entries,
        "last_scan_at": at,
        "updated_at": now,
    }


def move_inside(conn: Connection, list_id: int, change: int) -> None:
    if change:
        conn.execute(_MOVE_INSIDE, {"list_id": list_id, "change": change})


@dataclass(frozen=True, slots=True)
class Changes:
    """What an admitted scan changes, for a caller that writes it all at once (PostgreSQL)."""

    #: The ticket moves ``claimed → redeemed`` (a single-use entry).
    redeems: bool
    #: The ticket's new presence row on the list.
    presence: dict[str, Any]
    #: The list's ``inside_now`` changes by this (lists with a capacity), else 0.
    inside_change: int


def _decide(
    session: Session,
    ticket: Row[*tuple[Any, ...]],
    *,
    list_id: int | None,
    gate: str,
    direction: Direction,
    now: datetime,
) -> tuple[ListView, rules.History, str | None, int | None, RedemptionResult]:
    """The deciding list, the ticket's history on it, its class, the list's inside count (locked,
    lists with a capacity only) and the answer."""
    view, history, ticket_class = _scan_view(session, ticket, list_id=list_id, gate=gate)
    inside_now = None
    if view.rules.capacity is not None:
        inside_now = session.connection().execute(_LOCK_LIST, {"list_id": view.list_id}).scalar_one()
    result = rules.decide(
        view.rules, ticket.state, history, direction, now, inside_now=inside_now, ticket_class=ticket_class
    )
    return view, history, ticket_class, inside_now, result


def plan(
    session: Session,
    ticket: Row[*tuple[Any, ...]],
    *,
    list_id: int | None,
    gate: str,
    direction: Direction,
    now: datetime,
) -> tuple[Admission, Changes | None]:
    """Decide a scan of ``ticket`` (locked by ``SELECT … FOR UPDATE``: PostgreSQL) and say what
    it changes if admitted, writing nothing: the caller writes the changes with the scan's record
    (``services.redemption_writes``). Under the row lock the ticket's state cannot move meanwhile."""
    view, history, _class, _inside, result = _decide(
        session, ticket, list_id=list_id, gate=gate, direction=direction, now=now
    )
    admission = Admission(result, view.list_id, view.single_use, direction)
    if result != RedemptionResult.OK:
        return admission, None
    new = rules.after(view.rules, history, direction, now)
    presence = presence_row(
        ticket_id=ticket.id, list_id=view.list_id, event_id=ticket.event_id, history=new, at=now, now=now
    )
    change = rules.inside_change(history, new) if view.rules.capacity is not None else 0
    return admission, Changes(view.single_use and direction == Direction.ENTRY, presence, change)


def admit(
    session: Session,
    ticket: Row[*tuple[Any, ...]],
    *,
    list_id: int | None,
    gate: str,
    direction: Direction,
    now: datetime,
) -> Admission:
    """Decide a scan of ``ticket`` (already locked) and apply it if admitted (no commit): statement
    by statement, as SQLite needs (no row locks: the guarded UPDATE decides a race)."""
    conn = session.connection()
    view, history, ticket_class, inside_now, result = _decide(
        session, ticket, list_id=list_id, gate=gate, direction=direction, now=now
    )
    consumes = result == RedemptionResult.OK and view.single_use and direction == Direction.ENTRY
    if consumes and conn.execute(_REDEEM, {"ticket_id": ticket.id, "at": now}).rowcount != 1:
        # Only without row locks (SQLite): a concurrent writer got there first. Look again.
        state = conn.execute(_TICKET_STATE, {"ticket_id": ticket.id}).scalar_one()
        result = rules.decide(
            view.rules, state, history, direction, now, inside_now=inside_now, ticket_class=ticket_class
        )
    if result == RedemptionResult.OK:
        new = rules.after(view.rules, history, direction, now)
        row = presence_row(
            ticket_id=ticket.id, list_id=view.list_id, event_id=ticket.event_id, history=new, at=now, now=now
        )
        conn.execute(upsert_statement(conn.dialect.name), row)
        if view.rules.capacity is not None:
            move_inside(conn, view.list_id, rules.inside_change(history, new))
    return Admission(result, view.list_id, view.single_use, direction)
