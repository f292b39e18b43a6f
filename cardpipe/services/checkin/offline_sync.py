"""Merge the scans an offline gate decided alone, uploaded later in batches.

Invariants:

- **Idempotent per nonce.** A nonce already recorded (an earlier upload, a retry after a lost
  answer, a concurrent upload of the same batch) is reported ``duplicate`` and changes nothing; a
  nonce recorded for a different scan is ``rejected``. The scanned tickets are locked (ordered by
  id) *before* nonces are checked, so two concurrent uploads of one batch serialise on the locks
  and the second sees the first's nonces.
- **The gate's decision is what happened at the door.** Every scan is recorded with the result
  the gate showed (``offline``, ``scanned_at`` = the gate's clock), and an admitted one is applied
  (history on the list, single-use ticket ``claimed → redeemed`` with its WeChat consume queued,
  capacity counter) even when the server would have refused it.
- **Conflicts are flagged, never dropped.** Scans are replayed in the order they happened at the
  doors (``scanned_at``), each decided again by :func:`rules.decide` on the server's view; an
  admission the server would have refused keeps the server's reason in ``conflict`` (e.g. the same
  single-use ticket let in by two offline gates: both entries stay, the later one is the conflict).
- **Set-based.** One batch costs a handful of statements (lock, nonce check, presence read, and
  one insert, upsert and update each: ``offline_writes``), not a round trip per scan. On
  PostgreSQL a set of codes, ids or nonces is one array parameter (``= ANY``), not one parameter
  per value: the statement text stays the same whatever the batch, and building it stays cheap.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, any_, bindparam, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.services.checkin import offline_writes, rules
from cardpipe.services.checkin.admission import ListView, list_for_scan, move_inside, presence_row
from cardpipe.services.checkin.gates import GateIdentity
from models import (
    CheckinList,
    ConsumeSync,
    Direction,
    Order,
    Presence,
    Redemption,
    RedemptionResult,
    Ticket,
    TicketState,
)

#: Most scans one upload may carry (a gate uploads a long offline spell in several).
MAX_BATCH = 2000


@dataclass(frozen=True, slots=True)
class OfflineScan:
    nonce: str
    code: str
    direction: Direction
    scanned_at: datetime
    #: What the gate showed: ``ok`` (let in / out) or the reason it refused.
    result: RedemptionResult


@dataclass(frozen=True, slots=True)
class ScanOutcome:
    nonce: str
    #: ``recorded``, ``duplicate`` (this nonce was merged before) or ``rejected`` (nonce reused).
    status: str
    conflict: str | None = None


@dataclass(slots=True)
class MergeReport:
    recorded: int = 0
    duplicates: int = 0
    rejected: int = 0
    conflicts: int = 0
    outcomes: list[ScanOutcome] = field(default_factory=list)
    #: Redemption ids whose WeChat consumes the caller queues with the merge, a chunk per message
    #: (``redemption_sync.queue_consumes``).
    consumes: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _TicketView:
    """A scanned ticket as the merge sees it while replaying the batch."""

    id: int
    card_id: str
    state: str
    ticket_class: str | None
    history: rules.History
    last_scan_at: datetime | None
    touched: bool = False
    redeemed_at: datetime | None = None


def _one_of(column: Any, values: Collection[Any], session: Session) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL ``column = ANY(:array)``, one parameter."""
    if session.get_bind().dialect.name != "postgresql":
        listed: ColumnElement[bool] = column.in_(values)
        return listed
    one_of: ColumnElement[bool] = column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
    return one_of


def merge(
    session: Session, gate: GateIdentity, scans: list[OfflineScan], *, now: datetime | None = None
) -> MergeReport:
    """Merge one uploaded batch (no commit; the caller adds the intents of ``consumes``, commits,
    then sends them)."""
    if len(scans) > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} scans per upload")
    now = now or clock.now()
    view = list_for_scan(session, event_id=gate.event_id, list_id=gate.list_id, gate=gate.name)
    tickets = _lock_tickets(session, gate, view.list_id, {scan.code for scan in scans})
    report = MergeReport()
    fresh = _drop_known_nonces(session, gate, scans, report)
    inside_now = _lock_list(session, view.list_id) if view.rules.capacity is not None else None
    inside_change = 0
    rows: list[dict[str, Any]] = []
    outcomes: dict[str, str | None] = {}
    for scan in sorted(fresh, key=lambda s: (s.scanned_at, s.nonce)):
        ticket = tickets.get(scan.code)
        conflict = None
        consumed = False
        if ticket is None:
            if scan.result == RedemptionResult.OK:
                conflict = "no ticket of this event has this code"
        elif scan.result == RedemptionResult.OK:
            inside = None if inside_now is None else inside_now + inside_change
            server = rules.decide(
                view.rules,
                ticket.state,
                ticket.history,
                scan.direction,
                scan.scanned_at,
                inside_now=inside,
                ticket_class=ticket.ticket_class,
            )
            if server != RedemptionResult.OK:
                conflict = f"the server would answer {server}"
            change, consumed = _apply(view, ticket, scan)
            inside_change += change
        outcomes[scan.nonce] = conflict
        rows.append(_row(gate, view, scan, ticket, conflict, consumed=consumed, now=now))
    if rows:
        recorded = offline_writes.insert_redemptions(session.connection(), rows)
        for nonce, conflict in outcomes.items():
            report.recorded += 1
            report.conflicts += conflict is not None
            report.outcomes.append(ScanOutcome(nonce, "recorded", conflict))
            consume = recorded[nonce]
            if consume:
                report.consumes.append(consume)
    _write_tickets(session, gate, view.list_id, tickets, now)
    if inside_now is not None:
        move_inside(session.connection(), view.list_id, inside_change)
    return report


def _lock_tickets(session: Session, gate: GateIdentity, list_id: int, codes: set[str]) -> dict[str, _TicketView]:
    """The scanned tickets of the gate's event, locked in id order, with their class and history on
    the list (the class comes by subquery: only the tickets are locked, not their orders)."""
    if not codes:
        return {}
    ticket_class = select(Order.ticket_class).where(Order.id == Ticket.order_id).scalar_subquery()
    found = session.execute(
        select(Ticket.id, Ticket.code, Ticket.card_id, Ticket.state, ticket_class.label("ticket_class"))
        .where(Ticket.event_id == gate.event_id, _one_of(Ticket.code, codes, session))
        .order_by(Ticket.id)
        .with_for_update()
    ).all()
    histories = {
        row.ticket_id: row
        for row in session.execute(
            select(
                Presence.ticket_id,
                Presence.entries,
                Presence.day,
                Presence.day_entries,
                Presence.inside,
                Presence.last_scan_at,
            ).where(Presence.list_id == list_id, _one_of(Presence.ticket_id, [t.id for t in found], session))
        )
    }
    views = {}
    for ticket in found:
        presence = histories.get(ticket.id)
        history = rules.History()
        last_scan_at = None
        if presence is not None:
            history = rules.History(presence.entries, presence.day, presence.day_entries, presence.inside)
            last_scan_at = presence.last_scan_at
        views[ticket.code] = _TicketView(
            ticket.id, ticket.card_id, ticket.state, ticket.ticket_class, history, last_scan_at
        )
    return views


def _drop_known_nonces(
    session: Session, gate: GateIdentity, scans: list[OfflineScan], report: MergeReport
) -> list[OfflineScan]:
    known = {
        row.nonce: row
        for row in session.execute(
            select(Redemption.nonce, Redemption.code, Redemption.gate, Redemption.direction).where(
                _one_of(Redemption.nonce, {scan.nonce for scan in scans}, session)
            )
        )
    }
    fresh: dict[str, OfflineScan] = {}
    for scan in scans:
        stored = known.get(scan.nonce)
        if stored is None and scan.nonce in fresh:
            earlier = fresh[scan.nonce]
            same = (earlier.code, earlier.direction) == (scan.code, scan.direction)
        elif stored is not None:
            same = (stored.code, stored.gate, stored.direction) == (scan.code, gate.name, scan.direction)
        else:
            fresh[scan.nonce] = scan
            continue
        if same:
            report.duplicates += 1
            report.outcomes.append(ScanOutcome(scan.nonce, "duplicate"))
        else:
            report.rejected += 1
            report.outcomes.append(ScanOutcome(scan.nonce, "rejected", "nonce already used for another scan"))
    return list(fresh.values())


def _lock_list(session: Session, list_id: int) -> int:
    return session.execute(
        select(CheckinList.inside_now).where(CheckinList.id == list_id).with_for_update()
    ).scalar_one()


def _apply(view: ListView, ticket: _TicketView, scan: OfflineScan) -> tuple[int, bool]:
    """Apply an admitted scan to the ticket's view: the change of who is inside, and whether the
    scan consumed the (single-use) ticket."""
    before = ticket.history
    new = rules.after(view.rules, before, scan.direction, scan.scanned_at)
    if ticket.last_scan_at is not None and scan.scanned_at < ticket.last_scan_at:
        # A later scan (online, or uploaded earlier) already says where the ticket is; this one
        # still counts as an entry, on the day that scan left in place.
        new = replace(new, inside=before.inside)
        if new.day != before.day:
            new = replace(new, day=before.day, day_entries=before.day_entries)
    else:
        ticket.last_scan_at = scan.scanned_at
    ticket.history = new
    ticket.touched = True
    consumed = view.single_use and scan.direction == Direction.ENTRY and ticket.state == TicketState.CLAIMED
    if consumed:
        ticket.state = TicketState.REDEEMED
        ticket.redeemed_at = scan.scanned_at
    return rules.inside_change(before, new), consumed


def _row(
    gate: GateIdentity,
    view: ListView,
    scan: OfflineScan,
    ticket: _TicketView | None,
    conflict: str | None,
    *,
    consumed: bool,
    now: datetime,
) -> dict[str, Any]:
    return {
        "nonce": scan.nonce,
        "code": scan.code,
        "card_id": ticket.card_id if ticket is not None else None,
        "event_id": gate.event_id,
        "ticket_id": ticket.id if ticket is not None else None,
        "gate": gate.name,
        "result": scan.result,
        "detail": None,
        "consume_sync": ConsumeSync.PENDING if consumed else ConsumeSync.NOT_NEEDED,
        "consume_attempts": 0,
        "consume_in_doubt": 0,
        "consumed_at": None,
        "list_id": view.list_id,
        "direction": scan.direction,
        "single_use": view.single_use,
        "offline": True,
        "scanned_at": scan.scanned_at,
        "conflict": conflict,
        "created_at": now,
    }


def _write_tickets(
    session: Session, gate: GateIdentity, list_id: int, tickets: dict[str, _TicketView], now: datetime
) -> None:
    """The touched tickets' histories on the list, and the consumed tickets redeemed."""
    conn = session.connection()
    histories = [
        presence_row(
            ticket_id=t.id,
            list_id=list_id,
            event_id=gate.event_id,
            history=t.history,
            at=t.last_scan_at or now,
            now=now,
        )
        for t in tickets.values()
        if t.touched
    ]
    offline_writes.upsert_histories(conn, histories, list_id=list_id, event_id=gate.event_id, now=now)
    redeemed = [(t.id, t.redeemed_at) for t in tickets.values() if t.redeemed_at is not None]
    offline_writes.redeem_tickets(conn, redeemed, now=now)


@dataclass(frozen=True, slots=True)
class Conflict:
    redemption_id: int
    ticket_id: int | None
    code: str
    gate: str
    list_id: int | None
    direction: str
    scanned_at: datetime | None
    uploaded_at: datetime
    conflict: str


def conflicts(session: Session, event_id: int, *, limit: int = 500) -> list[Conflict]:
    """The event's offline decisions the server would not have taken, newest first."""
    return [
        Conflict(
            r.id, r.ticket_id, r.code, r.gate, r.list_id, r.direction, r.scanned_at, r.created_at, r.conflict or ""
        )
        for r in session.scalars(
            select(Redemption)
            .where(Redemption.event_id == event_id, Redemption.conflict.is_not(None))
            .order_by(Redemption.id.desc())
            .limit(limit)
        )
    ]
