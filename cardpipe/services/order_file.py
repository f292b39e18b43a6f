"""Reading an order file (CSV or JSON lines): streamed, checked row by row.

The file is read one physical line at a time (memory stays flat whatever its size): each line
must be UTF-8, each row is checked (order_no, the buyer's MP openid, an optional unionid, a ticket
count of at least 1, an optional ticket class). A structural problem (bad UTF-8, bad CSV quoting,
a missing column) rejects the file at once; bad rows are collected (up to :data:`MAX_REPORTED`,
all counted) and reject it at the end. What needs the whole file is the import's job
(``cardpipe.services.order_import``), in SQL.
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

from cardpipe.services.ticket_classes import check_class

#: A buyer rarely holds more tickets than WeChat lets one person receive of a card (get_limit).
MAX_TICKETS_PER_ORDER = 100
MAX_ORDER_NO_LENGTH = 64
#: A longer physical line is refused rather than read into memory.
MAX_LINE_BYTES = 64 * 1024
#: Errors and conflicts listed in a report; the totals count all of them.
MAX_REPORTED = 100

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
