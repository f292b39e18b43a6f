"""Order import from CSV or JSON lines: streamed, validated row by row, all or nothing.

The file is read and checked row by row (``cardpipe.services.order_file``) and valid rows go to
a temporary staging table (``COPY`` on PostgreSQL). Whatever needs the whole file — an order_no
repeated inside it, an order_no already stored with other data — is then found by SQL over the
staging table, not in Python memory.

The choice, documented for the organiser: one import is one transaction. A malformed file (bad
UTF-8, bad CSV quoting, a missing column, a bad row, an order_no twice in the file) is rejected
with line numbers and stores nothing. An order_no already stored with the *same* data is left as
it is (so importing the same file again changes nothing); one stored with *different* data is a
conflict: reported with its line and never overwritten. Conflicts do not stop the rest of the
file from being imported unless ``reject_conflicts`` is set, which makes any conflict reject the
whole import.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import psycopg
from sqlalchemy import Connection, select, text, update
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.db import rowcount
from cardpipe.services.events import UnknownEvent
from cardpipe.services.order_file import (
    MAX_REPORTED,
    ImportFormat,
    ImportRejected,
    LineError,
    OrderRow,
    Progress,
    read_orders,
)
from models import Event

#: Rows staged per executemany on SQLite.
SQLITE_BATCH = 5_000
_STAGING = "order_import_staging"


@dataclass(frozen=True)
class Conflict:
    line: int
    order_no: str
    #: Which stored values differ from the file's: openid, unionid, ticket_count, ticket_class.
    fields: tuple[str, ...]


@dataclass(frozen=True)
class ImportReport:
    rows: int
    inserted: int
    unchanged: int
    tickets_added: int
    conflicts: list[Conflict]
    conflicts_total: int


def _copy_text(value: str) -> str:
    return value.replace("\\", "\\\\")


class _Staging:
    """The file's valid rows in a temp table of this transaction."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._postgres = connection.dialect.name == "postgresql"
        suffix = "ON COMMIT DROP" if self._postgres else ""
        if not self._postgres:
            # SQLite keeps a temp table for the connection's life: a previous import's goes first.
            connection.execute(text(f"DROP TABLE IF EXISTS temp.{_STAGING}"))
        connection.execute(
            text(
                f"CREATE TEMP TABLE {_STAGING} (line INTEGER NOT NULL, order_no VARCHAR(64) NOT NULL, "
                f"mp_openid VARCHAR(64) NOT NULL, unionid VARCHAR(64), ticket_count INTEGER NOT NULL, "
                f"ticket_class VARCHAR(32)) {suffix}"
            )
        )

    def load(self, rows: Iterator[OrderRow]) -> int:
        return self._copy(rows) if self._postgres else self._insert(rows)

    def _copy(self, rows: Iterator[OrderRow]) -> int:
        raw = self._connection.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        count = 0
        with raw.cursor().copy(
            f"COPY {_STAGING} (line, order_no, mp_openid, unionid, ticket_count, ticket_class) FROM STDIN"
        ) as copy:
            buffer: list[str] = []
            for row in rows:
                unionid = row.unionid or "\\N"
                ticket_class = "\\N" if row.ticket_class is None else _copy_text(row.ticket_class)
                buffer.append(
                    f"{row.line}\t{_copy_text(row.order_no)}\t{row.openid}\t{unionid}\t{row.ticket_count}"
                    f"\t{ticket_class}\n"
                )
                if len(buffer) >= 10_000:
                    copy.write("".join(buffer))
                    count += len(buffer)
                    buffer.clear()
            copy.write("".join(buffer))
            count += len(buffer)
        return count

    def _insert(self, rows: Iterator[OrderRow]) -> int:
        statement = text(
            f"INSERT INTO {_STAGING} (line, order_no, mp_openid, unionid, ticket_count, ticket_class) "
            "VALUES (:line, :order_no, :openid, :unionid, :ticket_count, :ticket_class)"
        )
        count = 0
        batch: list[dict[str, object]] = []
        for row in rows:
            batch.append(row.__dict__)
            if len(batch) >= SQLITE_BATCH:
                self._connection.execute(statement, batch)
                count += len(batch)
                batch = []
        if batch:
            self._connection.execute(statement, batch)
            count += len(batch)
        return count


_REPEATS = text(
    f"""
    SELECT s.line, s.order_no, first.line AS first_line
    FROM {_STAGING} s
    JOIN (SELECT order_no, min(line) AS line FROM {_STAGING} GROUP BY order_no HAVING count(*) > 1) first
      ON first.order_no = s.order_no AND s.line > first.line
    ORDER BY s.line
    LIMIT {MAX_REPORTED}
    """
)
#: The stored values an import compares, in the order of ``_CONFLICTS``' flags.
_COMPARED = ("openid", "unionid", "ticket_count", "ticket_class")
_REPEATED_LINES = text(f"SELECT count(*) - count(DISTINCT order_no) FROM {_STAGING}")
_DIFFERS = (
    "(o.mp_openid <> s.mp_openid OR coalesce(o.unionid, '') <> coalesce(s.unionid, '') "
    "OR o.ticket_count <> s.ticket_count OR coalesce(o.ticket_class, '') <> coalesce(s.ticket_class, ''))"
)
_CONFLICTS = text(
    f"""
    SELECT s.line, s.order_no, o.mp_openid <> s.mp_openid, coalesce(o.unionid, '') <> coalesce(s.unionid, ''),
           o.ticket_count <> s.ticket_count, coalesce(o.ticket_class, '') <> coalesce(s.ticket_class, '')
    FROM {_STAGING} s JOIN orders o ON o.event_id = :event_id AND o.order_no = s.order_no
    WHERE {_DIFFERS}
    ORDER BY s.line
    LIMIT {MAX_REPORTED}
    """
)
_MATCHES = text(
    f"""
    SELECT count(*), sum(CASE WHEN {_DIFFERS} THEN 1 ELSE 0 END)
    FROM {_STAGING} s JOIN orders o ON o.event_id = :event_id AND o.order_no = s.order_no
    """
)
_NEW = (
    f"FROM {_STAGING} s "
    "WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.event_id = :event_id AND o.order_no = s.order_no)"
)
_NEW_TOTALS = text(f"SELECT count(*), coalesce(sum(s.ticket_count), 0) {_NEW}")
_INSERT_NEW = text(
    "INSERT INTO orders (event_id, order_no, mp_openid, unionid, ticket_count, ticket_class, created_at) "
    f"SELECT :event_id, s.order_no, s.mp_openid, s.unionid, s.ticket_count, s.ticket_class, :now {_NEW} "
    "ORDER BY s.line"
)


def _lock_event(session: Session, event_id: int) -> None:
    """Imports of one event run one at a time (and the planner's recount waits for them)."""
    if session.get_bind().dialect.name == "postgresql":
        found = session.scalar(select(Event.id).where(Event.id == event_id).with_for_update())
    else:
        found = rowcount(
            session.execute(update(Event).where(Event.id == event_id).values(orders_total=Event.orders_total))
        )
    if not found:
        raise UnknownEvent(f"no event {event_id}")


def import_orders(
    session: Session,
    event_id: int,
    stream: IO[bytes],
    fmt: ImportFormat,
    *,
    reject_conflicts: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Import ``stream`` into the event's orders inside the session's transaction. Raises
    :class:`ImportRejected` (the caller must roll back) or returns what was done."""
    _lock_event(session, event_id)
    connection = session.connection()
    staging = _Staging(connection)
    rows = staging.load(read_orders(stream, fmt, progress))

    repeats = connection.execute(_REPEATS).all()
    if repeats:
        errors = [
            LineError(line, f"order_no {order_no!r} already on line {first}") for line, order_no, first in repeats
        ]
        raise ImportRejected(errors, int(connection.execute(_REPEATED_LINES).scalar_one()))

    params = {"event_id": event_id}
    matched, differing = connection.execute(_MATCHES, params).one()
    differing = int(differing or 0)
    conflicts = [
        Conflict(
            line,
            order_no,
            tuple(name for name, differs in zip(_COMPARED, flags, strict=True) if differs),
        )
        for line, order_no, *flags in connection.execute(_CONFLICTS, params)
    ]
    if conflicts and reject_conflicts:
        errors = [
            LineError(c.line, f"order_no {c.order_no!r} is stored with another {', '.join(c.fields)}")
            for c in conflicts
        ]
        raise ImportRejected(errors, differing)

    new_orders, new_tickets = connection.execute(_NEW_TOTALS, params).one()
    if new_orders:
        connection.execute(_INSERT_NEW, {**params, "now": clock.now()})
        session.execute(
            update(Event)
            .where(Event.id == event_id)
            .values(
                orders_total=Event.orders_total + int(new_orders),
                tickets_total=Event.tickets_total + int(new_tickets),
            )
            .execution_options(synchronize_session=False)
        )
    return ImportReport(
        rows=rows,
        inserted=int(new_orders),
        unchanged=int(matched) - differing,
        tickets_added=int(new_tickets),
        conflicts=conflicts,
        conflicts_total=differing,
    )
