"""What an offline gate downloads: its list's rules and every ticket of the event as a keyed
hash, a state and (if it has one) its history on the list; then deltas since a cursor.

- **No usable codes on the device.** A code is stored as HMAC-SHA256 under the list's own key,
  truncated to 96 bits (16 base64url characters). The gate hashes what it scans and looks the
  hash up. Recovering codes from a lost device means trying every possible code against the
  HMAC: about 8·10^17 tries for the default 12-character codes (short codes, 6–8 characters,
  are within reach of such a search: keep them long where gates go offline).
- **Compact.** Hashes are one string, states one character each, histories only for tickets
  that have one: a 100k-ticket event is about 2 MB of JSON. Ticket classes (when the event's
  orders have any) are a list of names and one small number per ticket (0: no class, ``i``: the
  ``i``-th name), so the gate can answer ``not_on_list`` as the server does.
- **Deltas are absolute.** A delta carries the current state and history of every ticket that
  changed since the cursor (minus an overlap covering transactions that committed late), so
  applying one twice, or out of order with a snapshot, is harmless. The gate keeps its own
  not-yet-uploaded scans apart and folds them over the server's view.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.services.checkin.gates import GateIdentity
from cardpipe.services.checkin.lists import get_list
from models import CheckinList, Event, Order, Presence, Ticket, TicketState

FORMAT = 1
#: Transactions commit a little after they stamp ``updated_at``: deltas look back this far.
CURSOR_OVERLAP = timedelta(seconds=30)
HASH_CHARS = 16
#: One character per ticket state; anything not in a holder's hands yet is ``n``.
STATE_CHARS: dict[str, str] = {
    TicketState.CLAIMED: "c",
    TicketState.REDEEMED: "r",
    TicketState.REVOKED: "x",
    TicketState.DELETED: "d",
}
NOT_CLAIMED_CHAR = "n"


def code_hash(key: str, code: str) -> str:
    digest = hmac.new(bytes.fromhex(key), code.encode(), hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(digest).decode()


def _history(row: Any) -> list[Any]:
    return [row.entries, row.day, row.day_entries, bool(row.inside)]


def _rules(checkin_list: CheckinList, event: Event) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": checkin_list.id,
        "name": checkin_list.name,
        "policy": checkin_list.policy,
        "max_entries": checkin_list.max_entries,
        "max_per_day": checkin_list.max_per_day,
        "entry_after_exit_only": checkin_list.entry_after_exit_only,
        "window_start": iso(checkin_list.window_start),
        "window_end": iso(checkin_list.window_end),
        "capacity": checkin_list.capacity,
        "timezone": event.timezone,
        "ticket_classes": checkin_list.ticket_classes,
    }


@dataclass(frozen=True, slots=True)
class Snapshot:
    body: dict[str, Any]
    tickets: int


def snapshot(session: Session, gate: GateIdentity, *, now: datetime | None = None) -> Snapshot:
    """Everything the gate needs to decide scans alone, and the cursor for its deltas."""
    now = now or clock.now()
    checkin_list = get_list(session, gate.event_id, gate.list_id)
    event = session.get_one(Event, gate.event_id)
    key = checkin_list.snapshot_key
    hashes: list[str] = []
    states: list[str] = []
    history: dict[str, list[Any]] = {}
    class_numbers: dict[str | None, int] = {None: 0}
    classes: list[int] = []
    rows = session.execute(
        select(
            Ticket.code,
            Ticket.state,
            Order.ticket_class,
            Presence.entries,
            Presence.day,
            Presence.day_entries,
            Presence.inside,
        )
        .join(Order, Order.id == Ticket.order_id)
        .outerjoin(Presence, (Presence.ticket_id == Ticket.id) & (Presence.list_id == gate.list_id))
        .where(Ticket.event_id == gate.event_id, Ticket.code.is_not(None))
    )
    for row in rows:
        hashed = code_hash(key, row.code)
        hashes.append(hashed)
        states.append(STATE_CHARS.get(row.state, NOT_CLAIMED_CHAR))
        classes.append(class_numbers.setdefault(row.ticket_class, len(class_numbers)))
        if row.entries is not None:
            history[hashed] = _history(row)
    body = {
        "format": FORMAT,
        "gate": {"id": gate.gate_id, "name": gate.name},
        "event_id": gate.event_id,
        "list": _rules(checkin_list, event),
        "hash": {"alg": "hmac-sha256-96-b64url", "key": key},
        "cursor": now.isoformat(),
        "inside_now": checkin_list.inside_now,
        "codes": "".join(hashes),
        "states": "".join(states),
        "history": history,
    }
    if len(class_numbers) > 1:
        names = sorted(class_numbers, key=class_numbers.__getitem__)[1:]
        body["ticket_classes"] = {"names": names, "of": classes}
    return Snapshot(body, len(hashes))


def deltas(session: Session, gate: GateIdentity, cursor: datetime, *, now: datetime | None = None) -> dict[str, Any]:
    """Tickets whose state or history on the list changed since ``cursor`` (revocations, new
    tickets, other gates' scans), with their current values, the list's rules and a new cursor."""
    now = now or clock.now()
    since = cursor - CURSOR_OVERLAP
    checkin_list = get_list(session, gate.event_id, gate.list_id)
    event = session.get_one(Event, gate.event_id)
    key = checkin_list.snapshot_key
    states: dict[str, str] = {}
    classes: dict[str, str] = {}
    for code, state, ticket_class in session.execute(
        select(Ticket.code, Ticket.state, Order.ticket_class)
        .join(Order, Order.id == Ticket.order_id)
        .where(Ticket.event_id == gate.event_id, Ticket.code.is_not(None), Ticket.updated_at >= since)
    ):
        if code is None:  # excluded by the WHERE: the checker cannot see it
            continue
        hashed = code_hash(key, code)
        states[hashed] = STATE_CHARS.get(state, NOT_CLAIMED_CHAR)
        if ticket_class is not None:
            classes[hashed] = ticket_class
    history = {
        code_hash(key, row.code): _history(row)
        for row in session.execute(
            select(Ticket.code, Presence.entries, Presence.day, Presence.day_entries, Presence.inside)
            .join(Ticket, Ticket.id == Presence.ticket_id)
            .where(Presence.list_id == gate.list_id, Presence.updated_at >= since, Ticket.code.is_not(None))
        )
    }
    return {
        "format": FORMAT,
        "list": _rules(checkin_list, event),
        "cursor": now.isoformat(),
        "inside_now": checkin_list.inside_now,
        "states": states,
        "classes": classes,
        "history": history,
    }
