"""WeChat's view of consumes: ``user_consume_card`` pushes, reconciled with what the gates did.

The push worker calls :func:`record_wechat_consume` once it has checked the card belongs to the
account the push arrived for. A code consumed in WeChat but not here is marked redeemed too, and
every disagreement between the two sides is kept on a redemption row with
``consume_sync = 'disagrees'`` and a ``detail`` that says what happened, for ops. The consume
worker (``services.redemption_sync``) records its own disagreements with
:func:`mark_consume_disagrees`.

Invariants: one WeChat-recorded row per code (its nonce is derived from card and code, so a push
handled twice records nothing new); ``consume_sync`` only moves forward (``pending → done``,
``pending|done → disagrees``), by guarded updates.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select, update
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.db import rowcount
from cardpipe.services.redemption_writes import record_row
from cardpipe.services.redemptions import LOCK_BY_EVENT, result_of
from models import ConsumeSync, Direction, Redemption, RedemptionResult, Ticket, TicketState

log = logging.getLogger(__name__)

#: The gate recorded for codes consumed in WeChat rather than at one of our gates.
WECHAT_GATE_PREFIX = "wechat:"
#: Tickets WeChat may consume before a gate sees them (the claim signal can arrive later).
_IN_HOLDERS_HANDS = (TicketState.CLAIMED, TicketState.SERVED, TicketState.READY)
_tickets = Ticket.__table__


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
    ticket = conn.execute(LOCK_BY_EVENT, {"code": code, "event_id": event_id}).one_or_none()
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
    ticket: Row[*tuple[Any, ...]] | None,
    result: RedemptionResult,
    at: datetime,
    detail: str,
) -> None:
    record_row(
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
    disagrees = bool(rowcount(changed))
    if disagrees:
        log.warning("redemption %d disagrees with WeChat: %s", redemption_id, detail)
    return disagrees
