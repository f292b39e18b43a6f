"""Re-signing outstanding tickets with the current api_ticket.

A ticket that is ``ready`` or ``served`` and was signed by an older ticket version gets a new
cardExt (fresh nonce and timestamp). The UPDATE is guarded by state and version, so running it
twice, or racing a claim, changes nothing that is already current or already claimed.

Writes are set-based: one SELECT and one UPDATE per batch, whatever its size. On PostgreSQL the
new payloads travel as one JSON document joined with ``json_to_recordset`` (binding thousands of
array elements is slower than signing them); SQLite, for the embedded demo, gets an executemany.

:func:`resign_spent` is the per-row re-sign: the tickets whose (timestamp, nonce) a cancelled or
failed ``wx.addCard`` used up, each guarded by the nonce it replaces.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Row, bindparam, func, or_, select, text, update
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.db import rowcount
from cardpipe.services.ticket_signing import sign_card_ext
from models import CLAIMABLE_STATES, Event, Ticket

_tickets = Ticket.__table__

_POSTGRES_UPDATE = text(
    """
    UPDATE tickets AS t
       SET card_ext = v.card_ext, nonce = v.nonce, timestamp = v.ts,
           ticket_version = :version, signed_at = :now, updated_at = :now
      FROM json_to_recordset(CAST(:rows AS json)) AS v(id bigint, card_ext text, nonce text, ts integer)
     WHERE t.id = v.id AND t.state IN ('ready', 'served') AND t.ticket_version < :version
    """
)


def _stale(version: int) -> Any:
    return Ticket.state.in_(CLAIMABLE_STATES) & (Ticket.ticket_version < version)


def resign_tickets(session: Session | Connection, ticket_ids: Sequence[int], *, api_ticket: str, version: int) -> int:
    """Re-sign those of ``ticket_ids`` still outstanding and older than ``version``; returns how
    many were re-signed."""
    rows = session.execute(
        select(_tickets.c.id, _tickets.c.card_id, _tickets.c.code).where(
            _tickets.c.id.in_(ticket_ids),
            _tickets.c.state.in_(CLAIMABLE_STATES),
            _tickets.c.ticket_version < version,
        )
    ).all()
    return _write(session, rows, api_ticket=api_ticket, version=version)


def resign_range(
    session: Session, official_account_id: int, first_id: int, last_id: int, *, api_ticket: str, version: int
) -> int:
    """Re-sign the account's stale outstanding tickets with ids in ``[first_id, last_id]``."""
    rows = session.execute(
        select(Ticket.id, Ticket.card_id, Ticket.code)
        .join(Event, Event.id == Ticket.event_id)
        .where(
            Event.official_account_id == official_account_id,
            Ticket.id.between(first_id, last_id),
            _stale(version),
        )
    ).all()
    return _write(session, rows, api_ticket=api_ticket, version=version)


def stale_ranges(session: Session, official_account_id: int, version: int, chunk_size: int) -> list[tuple[int, int]]:
    """Id ranges covering the account's outstanding tickets signed before ``version``, each
    holding ``chunk_size`` of them (the last one fewer): the re-sign fan-out."""
    stale = (
        select(Ticket.id, ((func.row_number().over(order_by=Ticket.id) - 1) // chunk_size).label("chunk"))
        .join(Event, Event.id == Ticket.event_id)
        .where(Event.official_account_id == official_account_id, _stale(version))
        .subquery()
    )
    query = select(func.min(stale.c.id), func.max(stale.c.id)).group_by(stale.c.chunk).order_by(func.min(stale.c.id))
    return [(int(first), int(last)) for first, last in session.execute(query)]


def stale_count(session: Session, official_account_id: int, version: int) -> int:
    query = (
        select(func.count())
        .select_from(Ticket)
        .join(Event, Event.id == Ticket.event_id)
        .where(Event.official_account_id == official_account_id, _stale(version))
    )
    return int(session.scalar(query) or 0)


def _write(
    session: Session | Connection, rows: Sequence[Row[int, str, str | None]], *, api_ticket: str, version: int
) -> int:
    if not rows:
        return 0
    now = clock.now()
    signed = []
    for ticket_id, card_id, code in rows:
        ext = sign_card_ext(api_ticket=api_ticket, card_id=card_id, code=code, outer_str=str(ticket_id))
        signed.append({"id": ticket_id, "card_ext": ext.card_ext, "nonce": ext.nonce, "ts": ext.timestamp})
    bind = session.get_bind() if isinstance(session, Session) else session
    if bind.dialect.name == "postgresql":
        result = session.execute(_POSTGRES_UPDATE, {"rows": json.dumps(signed), "version": version, "now": now})
        return rowcount(result)
    statement = (
        update(_tickets)
        .where(
            _tickets.c.id == bindparam("ticket_id"),
            # Not IN (…): an expanding parameter cannot go into an executemany.
            or_(*(_tickets.c.state == state for state in CLAIMABLE_STATES)),
            _tickets.c.ticket_version < version,
        )
        .values(
            card_ext=bindparam("card_ext"),
            nonce=bindparam("nonce"),
            timestamp=bindparam("ts"),
            ticket_version=version,
            signed_at=now,
            updated_at=now,
        )
    )
    params = [{"ticket_id": s["id"], "card_ext": s["card_ext"], "nonce": s["nonce"], "ts": s["ts"]} for s in signed]
    return rowcount(session.execute(statement, params))


def resign_spent(
    session: Session | Connection, spent: Mapping[int, str], *, api_ticket: str, version: int
) -> list[int]:
    """A fresh nonce and timestamp for each outstanding ticket whose current nonce is the one
    given (WeChat refuses a (timestamp, nonce) pair a cancelled or failed addCard used). Guarded by
    that nonce, so repeating it, or racing a rotation re-sign, re-signs nothing twice. Returns
    the orders of the tickets re-signed."""
    if not spent:
        return []
    rows = session.execute(_SPENT_TICKETS, {"ticket_ids": list(spent)}).all()
    orders: list[int] = []
    for ticket_id, order_id, card_id, code, nonce in rows:
        if nonce != spent[ticket_id]:
            continue
        signed = sign_card_ext(api_ticket=api_ticket, card_id=card_id, code=code, outer_str=str(ticket_id))
        values = {"card_ext": signed.card_ext, "new_nonce": signed.nonce, "timestamp": signed.timestamp}
        values |= {"ticket_id": ticket_id, "nonce": nonce, "version": version, "now": clock.now()}
        if rowcount(session.execute(_RESIGN_SPENT, values)):
            orders.append(order_id)
    return orders


#: Built once (a cancelled attempt's re-sign runs in the result post).
_SPENT_TICKETS = select(
    _tickets.c.id, _tickets.c.order_id, _tickets.c.card_id, _tickets.c.code, _tickets.c.nonce
).where(_tickets.c.id.in_(bindparam("ticket_ids", expanding=True)), _tickets.c.state.in_(CLAIMABLE_STATES))
_RESIGN_SPENT = (
    update(_tickets)
    .where(
        _tickets.c.id == bindparam("ticket_id"),
        _tickets.c.nonce == bindparam("nonce"),
        _tickets.c.state.in_(CLAIMABLE_STATES),
    )
    .values(
        card_ext=bindparam("card_ext"),
        nonce=bindparam("new_nonce"),
        timestamp=bindparam("timestamp"),
        ticket_version=bindparam("version"),
        signed_at=bindparam("now", type_=_tickets.c.signed_at.type),
        updated_at=bindparam("now", type_=_tickets.c.updated_at.type),
    )
)
