"""The writes of one merged offline batch (``offline_sync.merge``): its redemption rows, the
scanned tickets' histories on the list, and the single-use tickets it consumed.

Set-based: on PostgreSQL each is one statement whose parameters are a few arrays (``unnest``),
not a row of parameters per scan, so the statement text is the same whatever the batch and
Python does not build and send thousands of parameter rows; elsewhere each is one batched
executemany. Each is guarded as its per-scan form is: a nonce recorded meanwhile is left as it was
(``ON CONFLICT DO NOTHING``), a history upsert changes every column of the row but its key (as
``admission.upsert_statement``), and a ticket moves ``claimed → redeemed`` only from ``claimed``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Connection, Integer, String, Text, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from cardpipe.db import unnested
from cardpipe.services.checkin.admission import upsert_statement
from models import ConsumeSync, Presence, Redemption, Ticket, TicketState
from models.base import UTCDateTime

_tickets = Ticket.__table__
#: The consumed tickets of a batch: ``claimed → redeemed`` at the time their gate let them in.
_REDEEMED_AT = select(*unnested({"ids": BigInteger, "ats": UTCDateTime})).subquery("redeemed_at")
_REDEEM_ALL = (
    update(_tickets)
    .where(_tickets.c.id == _REDEEMED_AT.c.ids, _tickets.c.state == TicketState.CLAIMED)
    .values(state=TicketState.REDEEMED, redeemed_at=_REDEEMED_AT.c.ats, updated_at=bindparam("now", type_=UTCDateTime))
)

_redemptions = Redemption.__table__
#: What differs between a batch's redemption rows (one array each), and what they share.
_PER_SCAN = {
    "nonce": String,
    "code": String,
    "card_id": String,
    "ticket_id": BigInteger,
    "result": String,
    "direction": String,
    "scanned_at": UTCDateTime,
    "conflict": Text,
    "consume_sync": String,
}
_PER_BATCH = (
    "event_id",
    "gate",
    "list_id",
    "single_use",
    "offline",
    "consume_attempts",
    "consume_in_doubt",
    "created_at",
)
_INSERT_ALL = (
    postgresql.insert(_redemptions)
    .from_select(
        [*_PER_SCAN, *_PER_BATCH],
        select(
            *unnested(_PER_SCAN),
            *[bindparam(name, type_=_redemptions.c[name].type) for name in _PER_BATCH],
        ),
    )
    .on_conflict_do_nothing(index_elements=["nonce"])
    .returning(_redemptions.c.nonce, _redemptions.c.id, _redemptions.c.consume_sync)
)

_presences = Presence.__table__
#: What differs between a batch's history rows (one array each); list, event and time are shared.
_PER_TICKET = {
    "ticket_id": BigInteger,
    "inside": Boolean,
    "entries": Integer,
    "day": String,
    "day_entries": Integer,
    "last_scan_at": UTCDateTime,
}
_NEW_PRESENCES = postgresql.insert(_presences).from_select(
    [*_PER_TICKET, "list_id", "event_id", "updated_at"],
    select(
        *unnested(_PER_TICKET),
        bindparam("list_id", type_=BigInteger),
        bindparam("event_id", type_=BigInteger),
        bindparam("updated_at", type_=UTCDateTime),
    ),
)
_UPSERT_ALL = _NEW_PRESENCES.on_conflict_do_update(
    index_elements=["ticket_id", "list_id"],
    set_={name: _NEW_PRESENCES.excluded[name] for name in [*_PER_TICKET, "updated_at"] if name != "ticket_id"},
)


def insert_redemptions(conn: Connection, rows: list[dict[str, Any]]) -> dict[str, int | None]:
    """Insert one batch's redemption rows (they share event, gate, list and time); nonce →
    redemption id to consume (None: nothing to consume). A nonce recorded meanwhile by a
    concurrent upload is left as it was."""
    recorded: dict[str, int | None] = {row["nonce"]: None for row in rows}
    if conn.dialect.name == "postgresql":
        params: dict[str, Any] = {name: [row[name] for row in rows] for name in _PER_SCAN}
        params.update({name: rows[0][name] for name in _PER_BATCH})
        inserted = conn.execute(_INSERT_ALL, params)
        recorded.update({r.nonce: r.id for r in inserted if r.consume_sync == ConsumeSync.PENDING})
        return recorded
    conn.execute(sqlite.insert(_redemptions).on_conflict_do_nothing(index_elements=["nonce"]), rows)
    consuming = [row["nonce"] for row in rows if row["consume_sync"] == ConsumeSync.PENDING]
    if consuming:
        found = conn.execute(
            select(_redemptions.c.nonce, _redemptions.c.id).where(
                _redemptions.c.nonce.in_(consuming), _redemptions.c.consume_sync == ConsumeSync.PENDING
            )
        )
        recorded.update({nonce: row_id for nonce, row_id in found})
    return recorded


def upsert_histories(
    conn: Connection, histories: list[dict[str, Any]], *, list_id: int, event_id: int, now: datetime
) -> None:
    """Write the scanned tickets' history rows on the list (``admission.presence_row`` each)."""
    if not histories:
        return
    if conn.dialect.name == "postgresql":
        params: dict[str, Any] = {name: [row[name] for row in histories] for name in _PER_TICKET}
        conn.execute(_UPSERT_ALL, {**params, "list_id": list_id, "event_id": event_id, "updated_at": now})
    else:
        conn.execute(upsert_statement(conn.dialect.name), histories)


def redeem_tickets(conn: Connection, redeemed: list[tuple[int, datetime]], *, now: datetime) -> None:
    """Move the consumed tickets (id, when their gate let them in) ``claimed → redeemed``."""
    if not redeemed:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(_REDEEM_ALL, {"ids": [i for i, _ in redeemed], "ats": [at for _, at in redeemed], "now": now})
    else:
        conn.execute(
            update(_tickets)
            .where(_tickets.c.id == bindparam("ticket_id"), _tickets.c.state == TicketState.CLAIMED)
            .values(state=TicketState.REDEEMED, redeemed_at=bindparam("at"), updated_at=now),
            [{"ticket_id": i, "at": at} for i, at in redeemed],
        )
