"""How a scan is written: its redemption row, and on PostgreSQL an admitted scan's whole change.

Every scan (a gate's, or a consume WeChat reported) is one ``redemptions`` row, inserted under its
nonce with ``ON CONFLICT (nonce) DO NOTHING``: no row id back means a concurrent request recorded
the nonce first (:func:`record_row`).

An admitted online scan changes up to four tables: the ticket (``claimed → redeemed``, a
single-use entry), its presence row on the list, the list's ``inside_now`` (lists with a
capacity) and, when it consumed the ticket, the outbox intent to consume its WeChat code. On
PostgreSQL, where the scanned ticket is locked by ``SELECT … FOR UPDATE``, :func:`write_admitted`
writes all of it and the scan's row in one statement (data-modifying CTEs, one snapshot, one
round trip), with the same guards as the statement-by-statement writes (``WHERE state =
'claimed'``; the outbox intent only if the scan's row was inserted). SQLite has no row locks and
writes them one by one (``services.checkin.admission.admit``), the guarded UPDATE deciding there.

The statements are built once per shape and cached: building them per call cost more CPU than
running them.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, null, select, true, update
from sqlalchemy.dialects import postgresql, sqlite

from cardpipe.services.checkin.admission import Changes
from cardpipe.services.outbox import Intent
from models import CheckinList, Direction, OutboxMessage, Presence, Redemption, Ticket, TicketState
from models.base import UTCDateTime

_tickets = Ticket.__table__
_presence = Presence.__table__
_lists = CheckinList.__table__
_redemptions = Redemption.__table__
_outbox = OutboxMessage.__table__

#: A scan's row: the defaults of the columns a scan may leave out.
_RECORD_DEFAULTS: dict[str, Any] = {
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
}
_RECORD_COLUMNS = (
    *_RECORD_DEFAULTS,
    "nonce",
    "code",
    "card_id",
    "event_id",
    "ticket_id",
    "gate",
    "result",
    "consume_sync",
    "created_at",
)
_PRESENCE_COLUMNS = (
    "ticket_id",
    "list_id",
    "event_id",
    "inside",
    "entries",
    "day",
    "day_entries",
    "last_scan_at",
    "updated_at",
)
_PRESENCE_CHANGING = ("inside", "entries", "day", "day_entries", "last_scan_at", "updated_at")


@cache
def _record_statement(dialect: str) -> Any:
    """INSERT … ON CONFLICT (nonce) DO NOTHING RETURNING id, in the dialect's spelling."""
    insert_into = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert_into(_redemptions).on_conflict_do_nothing(index_elements=["nonce"]).returning(_redemptions.c.id)


def record_row(conn: Connection, values: dict[str, Any]) -> int | None:
    """Insert one scan's row; its id, or None if its nonce was recorded first by another request."""
    return conn.execute(_record_statement(conn.dialect.name), {**_RECORD_DEFAULTS, **values}).scalar_one_or_none()


def _binds(table: Any, prefix: str, columns: tuple[str, ...]) -> dict[str, Any]:
    return {name: bindparam(prefix + name, type_=table.c[name].type) for name in columns}


@cache
def _admitted_statement(redeems: bool, moves_inside: bool, with_intent: bool) -> Any:
    """One admitted scan's writes: the guarded ticket update, the presence upsert, the capacity
    counter, the scan's row and the consume intent (each when the shape asks for it)."""
    side_effects = []
    if redeems:
        at = bindparam("at", type_=UTCDateTime)
        side_effects.append(
            update(_tickets)
            .where(_tickets.c.id == bindparam("ticket_id"), _tickets.c.state == TicketState.CLAIMED)
            .values(state=TicketState.REDEEMED, redeemed_at=at, updated_at=at)
            .returning(_tickets.c.id)
            .cte("redeemed")
        )
    presence = postgresql.insert(_presence).values(_binds(_presence, "p_", _PRESENCE_COLUMNS))
    side_effects.append(
        presence.on_conflict_do_update(
            index_elements=["ticket_id", "list_id"],
            set_={name: presence.excluded[name] for name in _PRESENCE_CHANGING},
        )
        .returning(_presence.c.ticket_id)
        .cte("presence")
    )
    if moves_inside:
        side_effects.append(
            update(_lists)
            .where(_lists.c.id == bindparam("p_list_id"))
            .values(
                inside_now=_lists.c.inside_now + bindparam("inside_change"),
                updated_at=bindparam("at", type_=UTCDateTime),
            )
            .returning(_lists.c.id)
            .cte("moved")
        )
    recorded = (
        postgresql.insert(_redemptions)
        .values(_binds(_redemptions, "r_", _RECORD_COLUMNS))
        .on_conflict_do_nothing(index_elements=["nonce"])
        .returning(_redemptions.c.id)
        .cte("recorded")
    )
    if not with_intent:
        return select(recorded.c.id, null()).add_cte(*side_effects)
    # The intent's arguments as ``services.outbox`` writes them: the JSON list ``[redemption_id]``.
    intent = (
        insert(_outbox)
        .from_select(
            ["actor", "args", "created_at"],
            select(
                bindparam("actor", type_=_outbox.c.actor.type),
                func.concat("[", recorded.c.id, "]"),
                bindparam("r_created_at", type_=UTCDateTime),
            ).select_from(recorded),
        )
        .returning(_outbox.c.id)
        .cte("intent")
    )
    return select(recorded.c.id, intent.c.id).select_from(recorded.join(intent, true())).add_cte(*side_effects)


def write_admitted(
    conn: Connection, record: dict[str, Any], changes: Changes, *, consume_actor: str | None
) -> tuple[int | None, Intent | None]:
    """Write an admitted scan (PostgreSQL, its ticket locked): the scan's row id and the consume
    intent (``consume_actor`` given and the scan redeems the ticket), or ``(None, None)`` when a
    concurrent request recorded the nonce first; the caller must then roll back, which undoes the
    rest of the statement."""
    with_intent = consume_actor is not None and changes.redeems
    statement = _admitted_statement(changes.redeems, changes.inside_change != 0, with_intent)
    row = {**_RECORD_DEFAULTS, **record}
    params: dict[str, Any] = {f"r_{name}": row[name] for name in _RECORD_COLUMNS}
    params.update({f"p_{name}": changes.presence[name] for name in _PRESENCE_COLUMNS})
    params.update(ticket_id=row["ticket_id"], at=row["created_at"], inside_change=changes.inside_change)
    params["actor"] = consume_actor
    found = conn.execute(statement, params).one_or_none()
    if found is None:
        return None, None
    redemption_id, intent_id = found
    intent = Intent(intent_id, consume_actor, [redemption_id]) if with_intent and consume_actor else None
    return redemption_id, intent
