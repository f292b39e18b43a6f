"""Gate redemption, recorded locally and answered at once; WeChat learns about it later.

A scan is checked under a row lock on the ticket (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite
serialises writers, and the guarded ``UPDATE … WHERE state = 'claimed'`` decides there), decided
by the gate's check-in list (``services.checkin.admission``: single or multi use, entry or exit,
limits, windows, anti-passback, capacity), recorded under its client nonce, and answered. The
intent to tell WeChat (``code/consume``, single-use entries only: :data:`CONSUME_ACTOR`) commits
with the scan and is sent after the commit, so the gate never waits on WeChat. A partial unique
index (one online ``ok`` entry per single-use ticket) backs the lock up in the database itself.

Idempotency: ``redemptions.nonce`` is unique. A nonce seen before returns the stored answer and
changes nothing; a nonce being recorded by a concurrent request makes this one replay it.

WeChat's own view of consumes (``user_consume_card`` pushes) is ``services.wechat_consumes``;
both record their rows with ``services.redemption_writes``.

The gate's statements are built once and run as Core on the session's connection: building
SQLAlchemy statements per call cost more CPU than everything else on this path. On PostgreSQL
a fresh scan takes three statements: the ticket locked with its nonce looked up, the list's rules
with the ticket's history, and every write at once (``redemption_writes.write_admitted``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, select
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.db import session_scope
from cardpipe.services import outbox
from cardpipe.services.checkin import admission
from cardpipe.services.outbox import Intent
from cardpipe.services.redemption_writes import record_row, write_admitted
from cardpipe.services.scan_answers import Answer, Scan
from models import ConsumeSync, Direction, Event, Redemption, RedemptionResult, Ticket, TicketState

log = logging.getLogger(__name__)

#: The worker actor that consumes a redeemed ticket's code in WeChat (``workers.redemptions``),
#: named here so that the scan and its outbox intent commit together.
CONSUME_ACTOR = "consume_redeemed_code"
#: What a ticket in each state answers at a gate.
RESULT_BY_STATE = {
    TicketState.CLAIMED: RedemptionResult.OK,
    TicketState.REDEEMED: RedemptionResult.ALREADY_REDEEMED,
    TicketState.REVOKED: RedemptionResult.REVOKED,
    TicketState.DELETED: RedemptionResult.DELETED,
}


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
LOCK_BY_EVENT = TICKET_COLUMNS.where(_CODE, _tickets.c.event_id == bindparam("event_id")).with_for_update()
#: The redemption already recorded under the scan's nonce, if any: read with the ticket's lock, so
#: a fresh scan (the common case) costs one statement before its decision.
_SEEN = select(_redemptions.c.id).where(_redemptions.c.nonce == bindparam("nonce")).scalar_subquery().label("seen")
_CANDIDATES = select(*TICKET_COLUMNS.selected_columns, _SEEN)
_LOCK_BY_CODE = _CANDIDATES.where(_CODE).with_for_update(of=_tickets)
_LOCK_BY_CARD = _CANDIDATES.where(_CODE, _tickets.c.card_id == bindparam("card_id")).with_for_update(of=_tickets)
_LOCK_BY_SCAN_EVENT = _CANDIDATES.where(_CODE, _tickets.c.event_id == bindparam("event_id")).with_for_update(
    of=_tickets
)
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


def redeem_and_queue(scan: Scan) -> tuple[Answer, list[Intent]]:
    """Redeem a scan and queue the WeChat consume it calls for: one transaction records the scan
    and, when it consumed the ticket, the intent to run :data:`CONSUME_ACTOR` on its redemption.
    The caller sends the intents after the commit (the outbox relay does, should it not get to
    it). Every gate entry point (the api, ``cardpipe redeem``) goes through here."""
    try:
        with session_scope() as session:
            return _redeem(session, scan, clock.now(), consume_actor=CONSUME_ACTOR)
    except NonceInFlight:
        with session_scope() as session:
            return _redeem(session, scan, clock.now(), consume_actor=CONSUME_ACTOR)


def redeem(session: Session, scan: Scan, *, now: datetime | None = None) -> Answer:
    """Check and record one scan (no commit), queueing nothing. Raises :class:`NonceInFlight`
    when a concurrent request recorded the same nonce first: roll back and call again to get its
    answer."""
    return _redeem(session, scan, now or clock.now(), consume_actor=None)[0]


def _redeem(session: Session, scan: Scan, now: datetime, *, consume_actor: str | None) -> tuple[Answer, list[Intent]]:
    """The scan checked and recorded, with the consume intent when ``consume_actor`` is given.
    On PostgreSQL a fresh scan of a known ticket takes three statements: the ticket locked with
    its nonce looked up, the list's rules with the ticket's history, and every write at once."""
    conn = session.connection()
    candidates = _locked_candidates(conn, scan)
    if not candidates or candidates[0].seen is not None:
        stored = conn.execute(_STORED, {"nonce": scan.nonce}).one_or_none()
        if stored is not None:
            return _replay(conn, stored, scan), []
    ticket = _scanned_ticket(conn, scan, candidates)
    if ticket is None:
        return _record(conn, scan, None, RedemptionResult.INVALID, now, event_id=_gate_event_id(conn, scan))
    if not _is_gates_event(ticket, scan):
        return _record(conn, scan, ticket, RedemptionResult.WRONG_EVENT, now, event_id=_gate_event_id(conn, scan))
    if conn.dialect.name == "postgresql":
        decided, changes = admission.plan(
            session, ticket, list_id=scan.list_id, gate=scan.gate, direction=scan.direction, now=now
        )
    else:
        admitted = admission.admit(
            session, ticket, list_id=scan.list_id, gate=scan.gate, direction=scan.direction, now=now
        )
        decided, changes = admitted, None
    return _record(
        conn,
        scan,
        ticket,
        decided.result,
        now,
        event_id=ticket.event_id,
        decided=decided,
        changes=changes,
        consume_actor=consume_actor,
    )


def _is_gates_event(ticket: Row[*tuple[Any, ...]], scan: Scan) -> bool:
    if scan.event_id is not None and ticket.event_id != scan.event_id:
        return False
    return not scan.card_id or ticket.card_id == scan.card_id


def _locked_candidates(conn: Connection, scan: Scan) -> list[Row[*tuple[Any, ...]]]:
    """The tickets the scan may name, locked, each with the redemption already recorded under
    the scan's nonce (``seen``). A code is unique per card, so without a card_id it may (very
    rarely) name tickets of several events."""
    params = {"code": scan.code, "nonce": scan.nonce}
    if scan.card_id:
        return list(conn.execute(_LOCK_BY_CARD, {**params, "card_id": scan.card_id}).all())
    if scan.event_id is not None:
        return list(conn.execute(_LOCK_BY_SCAN_EVENT, {**params, "event_id": scan.event_id}).all())
    return list(conn.execute(_LOCK_BY_CODE, params).all())


def _scanned_ticket(
    conn: Connection, scan: Scan, candidates: list[Row[*tuple[Any, ...]]]
) -> Row[*tuple[Any, ...]] | None:
    """The scanned ticket (locked if it is the gate's): a code naming tickets of several events
    needs the gate to say which."""
    if len(candidates) > 1:
        raise AmbiguousCode(f"code {scan.code} belongs to {len(candidates)} events: scan with card_id or event_id")
    if candidates:
        return candidates[0]
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
    ticket: Row[*tuple[Any, ...]] | None,
    result: RedemptionResult,
    now: datetime,
    *,
    event_id: int | None,
    decided: admission.Admission | None = None,
    changes: admission.Changes | None = None,
    consume_actor: str | None = None,
) -> tuple[Answer, list[Intent]]:
    """Record the scan (and write ``changes``, an admitted scan's, with it), and answer it."""
    ok = result == RedemptionResult.OK
    single_use = decided.single_use if decided is not None else True
    consumes = ok and single_use and scan.direction == Direction.ENTRY
    record = {
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
    }
    intents: list[Intent] = []
    if changes is not None:
        inserted, intent = write_admitted(conn, record, changes, consume_actor=consume_actor)
        intents = [intent] if intent is not None else []
    else:
        inserted = record_row(conn, record)
        if inserted is not None and consumes and consume_actor is not None:
            intents = outbox.add_many(conn, consume_actor, [[inserted]])
    if inserted is None:
        raise NonceInFlight(scan.nonce)
    redeemed_at, redeemed_gate = (now, scan.gate) if consumes else (None, None)
    if result == RedemptionResult.ALREADY_REDEEMED and ticket is not None:
        redeemed_at, redeemed_gate = ticket.redeemed_at, _entry_gate(conn, ticket.id)
    answer = Answer(
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
    return answer, intents


def _entry_gate(conn: Connection, ticket_id: int) -> str | None:
    """The gate that let the ticket in (its one ``ok`` redemption)."""
    return conn.execute(_ENTRY_GATE, {"ticket_id": ticket_id}).scalar()


def _replay(conn: Connection, stored: Row[*tuple[Any, ...]], scan: Scan) -> Answer:
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
