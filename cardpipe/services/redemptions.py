"""Gate redemption, recorded locally and answered at once; WeChat learns about it later.

A scan is checked under a row lock on the ticket (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite
serialises writers, and the guarded ``UPDATE … WHERE state = 'claimed'`` decides there), decided
by the gate's check-in list (``services.checkin.admission``: single or multi use, entry or exit,
limits, windows, anti-passback, capacity), recorded under its client nonce, and answered. The
``code/consume`` that tells WeChat (single-use entries only) is queued after the commit
(``workers.redemptions``), so the gate never waits on WeChat. A partial unique index (one online
``ok`` entry per single-use ticket) backs the lock up in the database itself.

Idempotency: ``redemptions.nonce`` is unique. A nonce seen before returns the stored answer and
changes nothing; a nonce being recorded by a concurrent request makes this one replay it.

WeChat's own view arrives as ``user_consume_card`` pushes (the push worker calls
:func:`record_wechat_consume`): a code consumed in WeChat but not here is marked redeemed too,
and every disagreement between the two sides is kept on a redemption row with
``consume_sync = 'disagrees'`` and a ``detail`` that says what happened, for ops.

The gate's statements are built once, here, and run as Core on the session's connection:
building SQLAlchemy statements per call cost more CPU than everything else on this path.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Row, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.db import session_scope
from cardpipe.services import outbox
from cardpipe.services.checkin import admission
from cardpipe.services.outbox import Intent
from models import ConsumeSync, Direction, Event, Redemption, RedemptionResult, Ticket, TicketState

log = logging.getLogger(__name__)

#: The gate recorded for codes consumed in WeChat rather than at one of our gates.
WECHAT_GATE_PREFIX = "wechat:"
#: What a ticket in each state answers at a gate.
RESULT_BY_STATE = {
    TicketState.CLAIMED: RedemptionResult.OK,
    TicketState.REDEEMED: RedemptionResult.ALREADY_REDEEMED,
    TicketState.REVOKED: RedemptionResult.REVOKED,
    TicketState.DELETED: RedemptionResult.DELETED,
}
#: Tickets WeChat may consume before a gate sees them (the claim signal can arrive later).
_IN_HOLDERS_HANDS = (TicketState.CLAIMED, TicketState.SERVED, TicketState.READY)


class RedemptionRefused(Exception):
    """The scan itself is unusable (not a refusal of the ticket): answered with a 4xx."""


class AmbiguousCode(RedemptionRefused):
    pass


class UnknownGateEvent(RedemptionRefused):
    pass


class NonceReused(RedemptionRefused):
    pass


class NonceInFlight(Exception):
    """Another request is recording the same nonce; its answer, once committed, is ours."""


@dataclass(frozen=True, slots=True)
class Scan:
    code: str
    gate: str
    nonce: str
    card_id: str | None = None
    event_id: int | None = None
    direction: Direction = Direction.ENTRY
    #: The gate's list when the gate scans under its own token (its event is then ``event_id``).
    list_id: int | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    redemption_id: int
    result: RedemptionResult
    code: str
    gate: str
    nonce: str
    ticket_id: int | None
    event_id: int | None
    answered_at: datetime
    #: ``ok``: this scan; ``already_redeemed``: when the ticket was let in, and by which gate.
    redeemed_at: datetime | None
    redeemed_gate: str | None
    replayed: bool
    direction: Direction = Direction.ENTRY
    list_id: int | None = None
    single_use: bool = True

    @property
    def ok(self) -> bool:
        return self.result == RedemptionResult.OK

    @property
    def consumes(self) -> bool:
        """An admitted single-use entry: the ticket's WeChat card is consumed."""
        return self.ok and self.single_use and self.direction == Direction.ENTRY

    @property
    def queue_consume(self) -> bool:
        return self.consumes and not self.replayed

    def message(self) -> str:
        if self.ok and self.direction == Direction.EXIT:
            return "goodbye"
        if self.result == RedemptionResult.ALREADY_REDEEMED and self.redeemed_at:
            return f"already redeemed at {self.redeemed_at.isoformat()} by gate {self.redeemed_gate or '?'}"
        return _MESSAGES[self.result]


_MESSAGES = {
    RedemptionResult.OK: "welcome",
    RedemptionResult.INVALID: "no such ticket code",
    RedemptionResult.NOT_CLAIMED: "ticket not claimed into WeChat yet",
    RedemptionResult.ALREADY_REDEEMED: "already redeemed",
    RedemptionResult.REVOKED: "ticket revoked",
    RedemptionResult.DELETED: "ticket deleted from WeChat by its holder",
    RedemptionResult.WRONG_EVENT: "ticket of another event",
    RedemptionResult.OUTSIDE_WINDOW: "outside the list's admission hours",
    RedemptionResult.LIMIT_REACHED: "the ticket has used all its entries",
    RedemptionResult.DAY_LIMIT_REACHED: "the ticket has used all its entries for today",
    RedemptionResult.ALREADY_INSIDE: "the ticket is inside: it must exit before entering again",
    RedemptionResult.NOT_INSIDE: "the ticket is not inside",
    RedemptionResult.CAPACITY_FULL: "the venue is full: wait until someone exits",
    RedemptionResult.NOT_ON_LIST: "the list does not admit this ticket's class",
}


def result_of(state: str) -> RedemptionResult:
    return RESULT_BY_STATE.get(TicketState(state), RedemptionResult.NOT_CLAIMED)


def queue_quietly(send: Callable[[int], object], row_id: int) -> None:
    """Queue WeChat work after a commit. A failure is logged, not raised: the row stays
    ``pending`` and the resync sweep queues it again."""
    try:
        send(row_id)
    except Exception:
        log.exception("WeChat work for row %d not queued; the resync sweep will queue it", row_id)


# -- the statements ----------------------------------------------------------------------------

_tickets = Ticket.__table__
_redemptions = Redemption.__table__
TICKET_COLUMNS = select(
    _tickets.c.id, _tickets.c.event_id, _tickets.c.card_id, _tickets.c.state, _tickets.c.redeemed_at
)
_CODE = _tickets.c.code == bindparam("code")
_LOCK_BY_CODE = TICKET_COLUMNS.where(_CODE).with_for_update()
_LOCK_BY_CARD = TICKET_COLUMNS.where(_CODE, _tickets.c.card_id == bindparam("card_id")).with_for_update()
_LOCK_BY_EVENT = TICKET_COLUMNS.where(_CODE, _tickets.c.event_id == bindparam("event_id")).with_for_update()
_ANY_BY_CODE = TICKET_COLUMNS.where(_CODE).limit(2)
_BY_ID = TICKET_COLUMNS.where(_tickets.c.id == bindparam("ticket_id"))
_STORED = select(
    _redemptions.c.id,
    _redemptions.c.code,
    _redemptions.c.gate,
    _redemptions.c.nonce,
    _redemptions.c.result,
    _redemptions.c.ticket_id,
    _redemptions.c.event_id,
    _redemptions.c.created_at,
    _redemptions.c.direction,
    _redemptions.c.list_id,
    _redemptions.c.single_use,
).where(_redemptions.c.nonce == bindparam("nonce"))
_ENTRY_GATE = (
    select(_redemptions.c.gate)
    .where(
        _redemptions.c.ticket_id == bindparam("ticket_id"),
        _redemptions.c.result == RedemptionResult.OK,
        _redemptions.c.direction == Direction.ENTRY,
        _redemptions.c.single_use,
    )
    .order_by(_redemptions.c.id)
    .limit(1)
)


@cache
def _record_statement(dialect: str) -> Any:
    """INSERT … ON CONFLICT (nonce) DO NOTHING RETURNING id, in the dialect's spelling."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(_redemptions).on_conflict_do_nothing(index_elements=["nonce"]).returning(_redemptions.c.id)


def _record_row(conn: Connection, values: dict[str, Any]) -> int | None:
    row = {
        "consume_attempts": 0,
        "consume_in_doubt": 0,
        "detail": None,
        "consumed_at": None,
        "list_id": None,
        "direction": Direction.ENTRY,
        "single_use": True,
        "offline": False,
        "scanned_at": None,
        "conflict": None,
        **values,
    }
    return conn.execute(_record_statement(conn.dialect.name), row).scalar_one_or_none()


# -- the gate ----------------------------------------------------------------------------------


def redeem_scan(scan: Scan) -> Answer:
    """One scan in its own transaction. The caller queues the WeChat consume (``queue_consume``)
    after this returns, i.e. after the commit."""
    try:
        with session_scope() as session:
            return redeem(session, scan)
    except NonceInFlight:
        with session_scope() as session:
            return redeem(session, scan)


def redeem_and_queue(scan: Scan, *, consume_actor: str) -> tuple[Answer, list[Intent]]:
    """One scan in its own transaction, which also records the intent to consume the ticket's
    WeChat card (``consume_actor``) when the scan consumed it: the caller sends the intents after
    the commit (the outbox relay does, should the caller not get to it)."""

    def attempt() -> tuple[Answer, list[Intent]]:
        with session_scope() as session:
            answer = redeem(session, scan)
            if not answer.queue_consume:
                return answer, []
            return answer, outbox.add_many(session, consume_actor, [[answer.redemption_id]])

    try:
        return attempt()
    except NonceInFlight:
        return attempt()


def redeem(session: Session, scan: Scan, *, now: datetime | None = None) -> Answer:
    """Check and record one scan (no commit). Raises :class:`NonceInFlight` when a concurrent
    request recorded the same nonce first: roll back and call again to get its answer."""
    conn = session.connection()
    stored = conn.execute(_STORED, {"nonce": scan.nonce}).one_or_none()
    if stored is not None:
        return _replay(conn, stored, scan)
    now = now or clock.now()
    ticket = _locked_ticket(conn, scan)
    if ticket is None:
        return _record(conn, scan, None, RedemptionResult.INVALID, now, event_id=_gate_event_id(conn, scan))
    if not _is_gates_event(ticket, scan):
        return _record(conn, scan, ticket, RedemptionResult.WRONG_EVENT, now, event_id=_gate_event_id(conn, scan))
    decided = admission.admit(session, ticket, list_id=scan.list_id, gate=scan.gate, direction=scan.direction, now=now)
    return _record(conn, scan, ticket, decided.result, now, event_id=ticket.event_id, decided=decided)


def _is_gates_event(ticket: Row[Any], scan: Scan) -> bool:
    if scan.event_id is not None and ticket.event_id != scan.event_id:
        return False
    return not scan.card_id or ticket.card_id == scan.card_id


def _locked_ticket(conn: Connection, scan: Scan) -> Row[Any] | None:
    """The scanned ticket, locked. A code is unique per card, so without a card_id it may (very
    rarely) name tickets of several events: the gate must then say which."""
    if scan.card_id:
        rows = conn.execute(_LOCK_BY_CARD, {"code": scan.code, "card_id": scan.card_id}).all()
    elif scan.event_id is not None:
        rows = conn.execute(_LOCK_BY_EVENT, {"code": scan.code, "event_id": scan.event_id}).all()
    else:
        rows = conn.execute(_LOCK_BY_CODE, {"code": scan.code}).all()
    if len(rows) > 1:
        raise AmbiguousCode(f"code {scan.code} belongs to {len(rows)} events: scan with card_id or event_id")
    if rows:
        return rows[0]
    if not scan.card_id and scan.event_id is None:
        return None
    # Not this gate's ticket: is it another event's? (A refusal changes nothing: no lock.)
    others = conn.execute(_ANY_BY_CODE, {"code": scan.code}).all()
    return others[0] if others else None


def _gate_event_id(conn: Connection, scan: Scan) -> int | None:
    """The event the gate works for, from its event_id or card_id; a gate that names an event
    we do not know is misconfigured, which must show at once, not as a stream of refusals."""
    if scan.event_id is not None:
        if conn.execute(select(Event.id).where(Event.id == scan.event_id)).scalar() is None:
            raise UnknownGateEvent(f"no event {scan.event_id}")
        return scan.event_id
    if scan.card_id:
        event_id = conn.execute(select(Event.id).where(Event.card_id == scan.card_id)).scalar()
        if event_id is None:
            raise UnknownGateEvent(f"no event with card_id {scan.card_id}")
        return int(event_id)
    return None


def _record(
    conn: Connection,
    scan: Scan,
    ticket: Row[Any] | None,
    result: RedemptionResult,
    now: datetime,
    *,
    event_id: int | None,
    decided: admission.Admission | None = None,
) -> Answer:
    ok = result == RedemptionResult.OK
    single_use = decided.single_use if decided is not None else True
    consumes = ok and single_use and scan.direction == Direction.ENTRY
    inserted = _record_row(
        conn,
        {
            "nonce": scan.nonce,
            "code": scan.code,
            "card_id": ticket.card_id if ticket is not None else scan.card_id,
            "event_id": event_id,
            "ticket_id": ticket.id if ticket is not None else None,
            "gate": scan.gate,
            "result": result,
            "consume_sync": ConsumeSync.PENDING if consumes else ConsumeSync.NOT_NEEDED,
            "created_at": now,
            "list_id": decided.list_id if decided is not None else scan.list_id,
            "direction": scan.direction,
            "single_use": single_use,
        },
    )
    if inserted is None:
        raise NonceInFlight(scan.nonce)
    redeemed_at, redeemed_gate = (now, scan.gate) if consumes else (None, None)
    if result == RedemptionResult.ALREADY_REDEEMED and ticket is not None:
        redeemed_at, redeemed_gate = ticket.redeemed_at, _entry_gate(conn, ticket.id)
    return Answer(
        redemption_id=inserted,
        result=result,
        code=scan.code,
        gate=scan.gate,
        nonce=scan.nonce,
        ticket_id=ticket.id if ticket is not None else None,
        event_id=event_id,
        answered_at=now,
        redeemed_at=redeemed_at,
        redeemed_gate=redeemed_gate,
        replayed=False,
        direction=scan.direction,
        list_id=decided.list_id if decided is not None else scan.list_id,
        single_use=single_use,
    )


def _entry_gate(conn: Connection, ticket_id: int) -> str | None:
    """The gate that let the ticket in (its one ``ok`` redemption)."""
    return conn.execute(_ENTRY_GATE, {"ticket_id": ticket_id}).scalar()


def _replay(conn: Connection, stored: Row[Any], scan: Scan) -> Answer:
    if (stored.code, stored.gate, stored.direction) != (scan.code, scan.gate, scan.direction):
        raise NonceReused(f"nonce {scan.nonce} was already used for another scan")
    result = RedemptionResult(stored.result)
    direction = Direction(stored.direction)
    consumed = result == RedemptionResult.OK and stored.single_use and direction == Direction.ENTRY
    redeemed_at, redeemed_gate = (stored.created_at, stored.gate) if consumed else (None, None)
    if result == RedemptionResult.ALREADY_REDEEMED and stored.ticket_id is not None:
        redeemed_at = conn.execute(_BY_ID, {"ticket_id": stored.ticket_id}).one().redeemed_at
        redeemed_gate = _entry_gate(conn, stored.ticket_id)
    return Answer(
        redemption_id=stored.id,
        result=result,
        code=stored.code,
        gate=stored.gate,
        nonce=stored.nonce,
        ticket_id=stored.ticket_id,
        event_id=stored.event_id,
        answered_at=stored.created_at,
        redeemed_at=redeemed_at,
        redeemed_gate=redeemed_gate,
        replayed=True,
        direction=direction,
        list_id=stored.list_id,
        single_use=stored.single_use,
    )


# -- WeChat's view: user_consume_card ----------------------------------------------------------


def record_wechat_consume(
    session: Session, *, event_id: int, card_id: str, code: str, consume_source: str, at: datetime
) -> None:
    """A ``user_consume_card`` push for the event's card ``card_id`` (the events worker calls
    this once it has checked the card is an event of the account the push arrived for; only that
    event's tickets are looked at; no commit here).

    - Our own consume echoed back (``FROM_API`` while our consume is done or in doubt): it
      confirms the consume.
    - A code consumed in WeChat (back office, 卡券助手…) that no gate let in: the ticket is marked
      redeemed (claimed, or served/ready when the claim signal has not arrived yet) and a
      redemption row at gate ``wechat:<source>`` records the disagreement.
    - Consumed in WeChat although a gate let it in and our consume had not reached WeChat, or
      although the ticket is revoked/deleted/unknown: recorded as a disagreement.

    Safe to call any number of times for the same push.
    """
    conn = session.connection()
    ticket = conn.execute(_LOCK_BY_EVENT, {"code": code, "event_id": event_id}).one_or_none()
    where = f"consumed in WeChat ({consume_source}) at {at.isoformat()}"
    if ticket is None:
        detail = f"{where}: no ticket of ours has this code"
        _record_wechat_row(conn, event_id, card_id, code, consume_source, None, RedemptionResult.INVALID, at, detail)
        return
    entry = session.scalars(
        select(Redemption)
        .where(
            Redemption.ticket_id == ticket.id,
            Redemption.result == RedemptionResult.OK,
            Redemption.direction == Direction.ENTRY,
            Redemption.single_use,
        )
        .order_by(Redemption.id)
        .limit(1)
        .with_for_update()
    ).one_or_none()
    if entry is not None:
        _reconcile_entry(session, entry, consume_source, at, where)
        return
    if ticket.state in _IN_HOLDERS_HANDS:
        conn.execute(
            update(_tickets)
            .where(_tickets.c.id == ticket.id, _tickets.c.state.in_(_IN_HOLDERS_HANDS))
            .values(state=TicketState.REDEEMED, redeemed_at=at, updated_at=clock.now())
        )
        detail = f"{where} before any gate let it in"
        if ticket.state != TicketState.CLAIMED:
            detail += f" (the ticket was still {ticket.state} here)"
        _record_wechat_row(conn, event_id, card_id, code, consume_source, ticket, RedemptionResult.OK, at, detail)
        return
    detail = f"{where} although the ticket is {ticket.state} here"
    _record_wechat_row(conn, event_id, card_id, code, consume_source, ticket, result_of(ticket.state), at, detail)


def _reconcile_entry(session: Session, entry: Redemption, consume_source: str, at: datetime, where: str) -> None:
    """The push for a ticket a gate (or an earlier push) already let in."""
    if entry.consume_sync in (ConsumeSync.DISAGREES, ConsumeSync.NOT_NEEDED):
        return  # already recorded, or this is the WeChat-recorded entry itself
    ours = consume_source == "FROM_API" and (entry.consume_sync == ConsumeSync.DONE or entry.consume_in_doubt > 0)
    if ours:
        session.execute(
            update(Redemption)
            .where(Redemption.id == entry.id, Redemption.consume_sync == ConsumeSync.PENDING)
            .values(consume_sync=ConsumeSync.DONE, consumed_at=at)
            .execution_options(synchronize_session=False)
        )
        return
    mark_consume_disagrees(session, entry.id, f"{where} while gate {entry.gate}'s consume had not reached WeChat")


def _record_wechat_row(
    conn: Connection,
    event_id: int,
    card_id: str,
    code: str,
    consume_source: str,
    ticket: Row[Any] | None,
    result: RedemptionResult,
    at: datetime,
    detail: str,
) -> None:
    _record_row(
        conn,
        {
            "nonce": _wechat_nonce(card_id, code),
            "code": code[:32],
            "card_id": card_id[:32],
            "event_id": event_id,
            "ticket_id": ticket.id if ticket is not None else None,
            "gate": f"{WECHAT_GATE_PREFIX}{consume_source}"[:64],
            "result": result,
            "detail": detail,
            "consume_sync": ConsumeSync.DISAGREES,
            "consumed_at": at,
            "created_at": clock.now(),
        },
    )
    log.warning("redemption disagreement on card %s code %s: %s", card_id, code, detail)


def _wechat_nonce(card_id: str, code: str) -> str:
    """One WeChat-recorded row per code (a code is consumed in WeChat at most once); client
    nonces cannot contain ':'."""
    nonce = f"{WECHAT_GATE_PREFIX}{card_id}:{code}"
    return nonce if len(nonce) <= 64 else WECHAT_GATE_PREFIX + hashlib.sha256(nonce.encode()).hexdigest()[:56]


def mark_consume_disagrees(session: Session, redemption_id: int, detail: str) -> bool:
    """``done`` may turn into ``disagrees``: a consume we took for ours (in doubt) can turn out
    to have been done in WeChat's back office when its push arrives."""
    changed = session.execute(
        update(Redemption)
        .where(Redemption.id == redemption_id, Redemption.consume_sync.in_([ConsumeSync.PENDING, ConsumeSync.DONE]))
        .values(consume_sync=ConsumeSync.DISAGREES, detail=detail)
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount:  # type: ignore[attr-defined]
        log.warning("redemption %d disagrees with WeChat: %s", redemption_id, detail)
    return bool(changed.rowcount)  # type: ignore[attr-defined]
