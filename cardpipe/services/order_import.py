"""Order import from CSV or JSON lines: streamed, validated row by row, all or nothing.

The file is read one physical line at a time (memory stays flat whatever its size): each line
must be UTF-8, each row is checked (order_no, the buyer's MP openid, an optional unionid, a ticket
count of at least 1, an optional ticket class) and valid rows go to a temporary staging table
(``COPY`` on PostgreSQL).
Whatever needs the whole file — an order_no repeated inside it, an order_no already stored with
other data — is then found by SQL over the staging table, not in Python memory.

The choice, documented for the organiser: one import is one transaction. A malformed file (bad
UTF-8, bad CSV quoting, a missing column, a bad row, an order_no twice in the file) is rejected
with line numbers and stores nothing. An order_no already stored with the *same* data is left as
it is (so importing the same file again changes nothing); one stored with *different* data is a
conflict: reported with its line and never overwritten. Conflicts do not stop the rest of the
file from being imported unless ``reject_conflicts`` is set, which makes any conflict reject the
whole import.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import IO, Any

import psycopg
from sqlalchemy import Connection, select, text, update
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.services.events import UnknownEvent
from cardpipe.services.ticket_classes import check_class
from models import Event

#: A buyer rarely holds more tickets than WeChat lets one person receive of a card (get_limit).
MAX_TICKETS_PER_ORDER = 100
MAX_ORDER_NO_LENGTH = 64
#: A longer physical line is refused rather than read into memory.
MAX_LINE_BYTES = 64 * 1024
#: Errors and conflicts listed in a report; the totals count all of them.
MAX_REPORTED = 100
#: Rows staged per executemany on SQLite.
SQLITE_BATCH = 5_000

OPENID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
COLUMN_ALIASES = {
    "order_no": "order_no",
    "openid": "openid",
    "mp_openid": "openid",
    "unionid": "unionid",
    "ticket_count": "ticket_count",
    "tickets": "ticket_count",
    "ticket_class": "ticket_class",
    "class": "ticket_class",
}
REQUIRED_COLUMNS = ("order_no", "openid", "ticket_count")
_STAGING = "order_import_staging"

Progress = Callable[[int], None]


class ImportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


@dataclass(frozen=True)
class LineError:
    line: int
    reason: str


class ImportRejected(Exception):
    """Nothing was stored. ``errors`` lists up to :data:`MAX_REPORTED` problems by line."""

    def __init__(self, errors: list[LineError], total: int | None = None) -> None:
        self.errors = errors[:MAX_REPORTED]
        self.total = len(errors) if total is None else total
        first = errors[0]
        super().__init__(f"import rejected: {self.total} problem(s); line {first.line}: {first.reason}")


@dataclass(frozen=True)
class OrderRow:
    line: int
    order_no: str
    openid: str
    unionid: str | None
    ticket_count: int
    ticket_class: str | None = None


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


class _TooManyErrors(Exception):
    pass


# --- reading ------------------------------------------------------------------------------


def _lines(stream: IO[bytes], progress: Progress | None) -> Iterator[str]:
    """Decoded physical lines (line endings kept, for the CSV reader)."""
    number = 0
    while True:
        raw = stream.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        number += 1
        if progress is not None:
            progress(len(raw))
        if len(raw) > MAX_LINE_BYTES:
            raise ImportRejected([LineError(number, f"line longer than {MAX_LINE_BYTES} bytes")])
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"not UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}"
            raise ImportRejected([LineError(number, reason)]) from None


def _check_row(line: int, order_no: Any, openid: Any, unionid: Any, count: Any, ticket_class: Any = None) -> OrderRow:
    """One row's values, or ValueError with the reason."""
    if not isinstance(order_no, str) or not order_no:
        raise ValueError("order_no is missing")
    if len(order_no) > MAX_ORDER_NO_LENGTH or not order_no.isprintable() or order_no != order_no.strip():
        raise ValueError(f"order_no must be 1–{MAX_ORDER_NO_LENGTH} printable characters without surrounding spaces")
    if not isinstance(openid, str) or not OPENID.match(openid):
        raise ValueError("openid must be the buyer's mini program openid (letters, digits, - and _; ≤ 64)")
    if unionid in ("", None):
        unionid = None
    elif not isinstance(unionid, str) or not OPENID.match(unionid):
        raise ValueError("unionid must be letters, digits, - and _ (≤ 64), or empty")
    if isinstance(count, str) and count.isdigit():
        count = int(count)
    if isinstance(count, bool) or not isinstance(count, int):
        raise ValueError("ticket_count must be a whole number")
    if not 1 <= count <= MAX_TICKETS_PER_ORDER:
        raise ValueError(f"ticket_count must be 1..{MAX_TICKETS_PER_ORDER}, got {count}")
    ticket_class = None if ticket_class in ("", None) else check_class(ticket_class)
    return OrderRow(line, order_no, openid, unionid, count, ticket_class)


def _csv_rows(lines: Iterator[str]) -> Iterator[OrderRow | LineError]:
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise ImportRejected([LineError(reader.line_num, f"bad CSV: {exc}")]) from None
    if header is None:
        raise ImportRejected([LineError(1, "the file is empty (a header line is expected)")])
    names = [COLUMN_ALIASES.get(name.strip().lower(), name.strip().lower()) for name in header]
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise ImportRejected([LineError(reader.line_num, f"missing column(s) {', '.join(missing)} in the header")])
    if len(set(names)) != len(names):
        raise ImportRejected([LineError(reader.line_num, "a column appears twice in the header")])
    position = {name: names.index(name) for name in (*REQUIRED_COLUMNS, "unionid", "ticket_class") if name in names}
    unionid_at = position.get("unionid")
    class_at = position.get("ticket_class")
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader, None)
        except csv.Error as exc:
            raise ImportRejected([LineError(start, f"bad CSV quoting: {exc}")]) from None
        if record is None:
            return
        if not record:
            continue
        if len(record) != len(names):
            yield LineError(start, f"expected {len(names)} fields, got {len(record)}")
            continue
        values = [value.strip() for value in record]
        try:
            yield _check_row(
                start,
                values[position["order_no"]],
                values[position["openid"]],
                None if unionid_at is None else values[unionid_at],
                values[position["ticket_count"]],
                None if class_at is None else values[class_at],
            )
        except ValueError as exc:
            yield LineError(start, str(exc))


def _jsonl_rows(lines: Iterator[str]) -> Iterator[OrderRow | LineError]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            yield LineError(number, f"not JSON: {exc}")
            continue
        except RecursionError:
            yield LineError(number, "not an order: JSON nested too deeply")
            continue
        if not isinstance(data, dict):
            yield LineError(number, "each line must be a JSON object")
            continue
        data = {COLUMN_ALIASES.get(key, key): value for key, value in data.items()}
        missing = [name for name in REQUIRED_COLUMNS if name not in data]
        if missing:
            yield LineError(number, f"missing field(s) {', '.join(missing)}")
            continue
        order_no = data["order_no"]
        if isinstance(order_no, int) and not isinstance(order_no, bool):
            order_no = str(order_no)
        try:
            yield _check_row(
                number, order_no, data["openid"], data.get("unionid"), data["ticket_count"], data.get("ticket_class")
            )
        except ValueError as exc:
            yield LineError(number, str(exc))


def read_orders(stream: IO[bytes], fmt: ImportFormat, progress: Progress | None = None) -> Iterator[OrderRow]:
    """Valid rows of ``stream``; raises :class:`ImportRejected` at the end if any row was bad (at
    once for a structural problem: bad UTF-8, bad quoting, a missing column)."""
    lines = _lines(stream, progress)
    parsed = _csv_rows(lines) if fmt == ImportFormat.CSV else _jsonl_rows(lines)
    errors: list[LineError] = []
    total = 0
    for item in parsed:
        if isinstance(item, LineError):
            total += 1
            if len(errors) < MAX_REPORTED:
                errors.append(item)
        elif not errors:
            yield item
    if errors:
        raise ImportRejected(errors, total)


# --- staging and merging ------------------------------------------------------------------


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
        found = session.execute(
            update(Event).where(Event.id == event_id).values(orders_total=Event.orders_total)
        ).rowcount
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
