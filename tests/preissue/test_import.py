"""Order import: CSV and JSON lines, streamed, all or nothing, idempotent, conflicts reported."""

from __future__ import annotations

import io
from typing import IO

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cardpipe.cli import app
from cardpipe.db import session_scope
from cardpipe.services import order_file, order_import
from cardpipe.services.order_file import ImportFormat, ImportRejected
from cardpipe.services.order_import import ImportReport
from models import Order
from tests.preissue.conftest import Organiser, event_row, orders_csv, orders_jsonl

HEADER = "order_no,openid,unionid,ticket_count\n"


def _import(event_id: int, data: bytes, fmt: ImportFormat = ImportFormat.CSV) -> ImportReport:
    with session_scope() as session:
        return order_import.import_orders(session, event_id, io.BytesIO(data), fmt)


def _snapshot(event_id: int) -> tuple[list[tuple[object, ...]], tuple[int, int]]:
    with session_scope() as session:
        rows = session.execute(
            select(Order.id, Order.order_no, Order.mp_openid, Order.unionid, Order.ticket_count)
            .where(Order.event_id == event_id)
            .order_by(Order.id)
        ).all()
        event = event_row(session, event_id)
        return [tuple(row) for row in rows], (event.orders_total, event.tickets_total)


def test_a_csv_file_is_imported(organiser: Organiser) -> None:
    event_id = organiser.create_event()

    report = organiser.import_csv(event_id, HEADER + "A-1,oBuyer_1,oUnion-1,2\nA-2,oBuyer_2,,1\n")

    assert report == order_import.ImportReport(
        rows=2, inserted=2, unchanged=0, tickets_added=3, conflicts=[], conflicts_total=0
    )
    rows, totals = _snapshot(event_id)
    assert [row[1:] for row in rows] == [("A-1", "oBuyer_1", "oUnion-1", 2), ("A-2", "oBuyer_2", None, 1)]
    assert totals == (2, 3)


def test_a_json_lines_file_is_imported(organiser: Organiser) -> None:
    event_id = organiser.create_event()
    data = orders_jsonl(3, tickets=2) + '{"order_no": 77, "mp_openid": "oX", "unionid": null, "tickets": 1}\n'

    report = _import(event_id, data.encode(), ImportFormat.JSONL)

    assert isinstance(report, order_import.ImportReport)
    assert (report.inserted, report.tickets_added) == (4, 7)
    rows, _ = _snapshot(event_id)
    assert rows[-1][1:] == ("77", "oX", None, 1)


def test_importing_the_same_file_again_changes_nothing(organiser: Organiser) -> None:
    event_id = organiser.create_event()
    data = orders_csv(500, tickets=2)
    organiser.import_csv(event_id, data)
    before = _snapshot(event_id)

    report = organiser.import_csv(event_id, data)

    assert (report.inserted, report.unchanged, report.conflicts_total) == (0, 500, 0)
    assert _snapshot(event_id) == before


def test_a_changed_order_is_a_conflict_and_is_not_overwritten(organiser: Organiser) -> None:
    # Given orders imported once
    event_id = organiser.create_event()
    organiser.import_csv(event_id, HEADER + "A-1,oA,,2\nA-2,oB,,1\n")
    before, _ = _snapshot(event_id)

    # When a later file changes A-1's ticket count and openid, and adds A-3
    report = organiser.import_csv(event_id, HEADER + "A-3,oC,,1\nA-1,oZ,,5\nA-2,oB,,1\n")

    # Then A-1 is reported (line 3) and kept as stored; A-3 is added; the totals follow
    assert report.conflicts == [order_import.Conflict(3, "A-1", ("openid", "ticket_count"))]
    assert (report.inserted, report.unchanged, report.conflicts_total) == (1, 1, 1)
    after, totals = _snapshot(event_id)
    assert after[:2] == before and after[2][1:] == ("A-3", "oC", None, 1)
    assert totals == (3, 4)


def test_reject_conflicts_makes_a_conflict_reject_the_whole_import(organiser: Organiser) -> None:
    event_id = organiser.create_event()
    organiser.import_csv(event_id, HEADER + "A-1,oA,,2\n")
    before = _snapshot(event_id)

    with pytest.raises(ImportRejected) as rejected:
        organiser.import_csv(event_id, HEADER + "A-3,oC,,1\nA-1,oA,oNewUnion,2\n", reject_conflicts=True)

    assert [(e.line, e.reason) for e in rejected.value.errors] == [(3, "order_no 'A-1' is stored with another unionid")]
    assert _snapshot(event_id) == before


def _classes(event_id: int) -> dict[str, str | None]:
    with session_scope() as session:
        rows = session.execute(select(Order.order_no, Order.ticket_class).where(Order.event_id == event_id))
        return {order_no: ticket_class for order_no, ticket_class in rows}


def test_orders_may_carry_a_ticket_class_in_csv_and_json_lines(organiser: Organiser) -> None:
    event_id = organiser.create_event()
    classes = "order_no,openid,ticket_count,ticket_class\nV-1,oA,1,vip\nS-1,oB,2,\nS-2,oC,1,标准\n"
    organiser.import_csv(event_id, classes)
    _import(
        event_id,
        b'{"order_no":"J-1","openid":"oD","ticket_count":1,"ticket_class":"press"}\n'
        b'{"order_no":"J-2","openid":"oE","ticket_count":1,"ticket_class":null}\n',
        ImportFormat.JSONL,
    )

    assert _classes(event_id) == {"V-1": "vip", "S-1": None, "S-2": "标准", "J-1": "press", "J-2": None}


def test_a_changed_ticket_class_is_a_conflict(organiser: Organiser) -> None:
    event_id = organiser.create_event()
    organiser.import_csv(event_id, "order_no,openid,ticket_count,ticket_class\nV-1,oA,1,vip\n")

    report = organiser.import_csv(event_id, "order_no,openid,ticket_count,ticket_class\nV-1,oA,1,standard\n")

    assert [(c.line, c.fields) for c in report.conflicts] == [(2, ("ticket_class",))]
    assert _classes(event_id) == {"V-1": "vip"}


def test_a_ticket_class_survives_the_copy_escapes(organiser: Organiser) -> None:
    event_id = organiser.create_event()
    organiser.import_csv(event_id, "order_no,openid,ticket_count,ticket_class\nV-1,oA,1,a\\N\\tb\n")

    assert _classes(event_id) == {"V-1": "a\\N\\tb"}


MALFORMED = {
    "bad CSV quoting": (
        ImportFormat.CSV,
        HEADER.encode() + b'A-1,oA,,1\nA-2,"oB"x,,1\nA-3,oC,,1\n',
        3,
        "bad CSV quoting",
    ),
    "unterminated quote": (ImportFormat.CSV, HEADER.encode() + b'A-1,oA,,1\nA-2,"oB,,1\nA-3,oC,,1\n', 3, "bad CSV"),
    "missing column": (ImportFormat.CSV, b"order_no,openid\nA-1,oA\n", 1, "missing column(s) ticket_count"),
    "ticket count 0": (ImportFormat.CSV, HEADER.encode() + b"A-1,oA,,1\nA-2,oB,,0\n", 3, "ticket_count must be 1..100"),
    "count not a number": (ImportFormat.CSV, HEADER.encode() + b"A-1,oA,,two\n", 2, "whole number"),
    "duplicate order_no": (
        ImportFormat.CSV,
        HEADER.encode() + b"A-1,oA,,1\nA-2,oB,,1\nA-1,oA,,1\n",
        4,
        "order_no 'A-1' already on line 2",
    ),
    "non-UTF-8 bytes": (ImportFormat.CSV, HEADER.encode() + b"A-1,oA,,1\nA-\xff2,oB,,1\n", 3, "not UTF-8: byte 0xff"),
    "wrong field count": (ImportFormat.CSV, HEADER.encode() + b"A-1,oA,1\n", 2, "expected 4 fields, got 3"),
    "bad openid": (ImportFormat.CSV, HEADER.encode() + b"A-1,o A,,1\n", 2, "openid must be"),
    "empty file": (ImportFormat.CSV, b"", 1, "empty"),
    "json not an object": (
        ImportFormat.JSONL,
        b'{"order_no":"A","openid":"oA","ticket_count":1}\n[1]\n',
        2,
        "JSON object",
    ),
    "json missing field": (ImportFormat.JSONL, b'{"order_no":"A","ticket_count":1}\n', 1, "missing field(s) openid"),
    "json bad syntax": (
        ImportFormat.JSONL,
        b'{"order_no":"A","openid":"oA","ticket_count":1}\n{"order_no":\n',
        2,
        "not JSON",
    ),
    "json count true": (ImportFormat.JSONL, b'{"order_no":"A","openid":"oA","ticket_count":true}\n', 1, "whole number"),
    "ticket class too long": (
        ImportFormat.CSV,
        b"order_no,openid,ticket_count,ticket_class\nA-1,oA,1,vip\nA-2,oB,1," + b"x" * 33 + b"\n",
        3,
        "ticket_class must be 1–32 printable characters",
    ),
    "json ticket class not a string": (
        ImportFormat.JSONL,
        b'{"order_no":"A","openid":"oA","ticket_count":1,"ticket_class":["vip"]}\n',
        1,
        "ticket_class must be",
    ),
}


@pytest.mark.parametrize("case", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_import_is_rejected_by_line_and_stores_nothing(
    organiser: Organiser, case: tuple[ImportFormat, bytes, int, str]
) -> None:
    # Given an event that already has orders
    fmt, data, line, reason = case
    event_id = organiser.create_event()
    organiser.import_csv(event_id, HEADER + "OLD-1,oOld,,3\n")
    before = _snapshot(event_id)

    # When a malformed file is imported
    with pytest.raises(ImportRejected) as rejected:
        _import(event_id, data, fmt)

    # Then the first problem names the line and the reason, and nothing changed
    first = rejected.value.errors[0]
    assert first.line == line and reason in first.reason, rejected.value.errors
    assert _snapshot(event_id) == before


def test_every_bad_row_is_reported_not_only_the_first(organiser: Organiser) -> None:
    event_id = organiser.create_event()
    bad = "".join(f"A-{n},oA,,0\n" for n in range(150))

    with pytest.raises(ImportRejected) as rejected:
        organiser.import_csv(event_id, HEADER + "OK-1,oA,,1\n" + bad)

    assert rejected.value.total == 150
    assert [e.line for e in rejected.value.errors] == list(range(3, 3 + order_file.MAX_REPORTED))


class _RecordingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.largest_read = 0

    def read(self, size: int | None = -1, /) -> bytes:
        self.largest_read = max(self.largest_read, size if size is not None and size >= 0 else 1 << 62)
        return super().read(size)

    def readline(self, size: int | None = -1, /) -> bytes:
        self.largest_read = max(self.largest_read, size if size is not None and size >= 0 else 1 << 62)
        return super().readline(size)


def test_the_file_is_read_a_bounded_line_at_a_time(organiser: Organiser) -> None:
    event_id = organiser.create_event()
    stream = _RecordingStream(orders_csv(20_000).encode())

    with session_scope() as session:
        report = order_import.import_orders(session, event_id, stream, ImportFormat.CSV)

    assert report.inserted == 20_000
    assert stream.largest_read <= order_file.MAX_LINE_BYTES + 1


def test_an_overlong_line_is_refused_without_reading_it_whole(organiser: Organiser) -> None:
    event_id = organiser.create_event()
    stream: IO[bytes] = _RecordingStream(HEADER.encode() + b"A-1,oA,,1\n" + b"x" * (order_file.MAX_LINE_BYTES * 4))

    with pytest.raises(ImportRejected) as rejected, session_scope() as session:
        order_import.import_orders(session, event_id, stream, ImportFormat.CSV)

    assert rejected.value.errors[0].line == 3
    assert isinstance(stream, _RecordingStream) and stream.largest_read <= order_file.MAX_LINE_BYTES + 1


def test_an_import_into_an_unknown_event_is_refused(organiser: Organiser) -> None:
    from cardpipe.services.events import UnknownEvent

    with pytest.raises(UnknownEvent):
        _import(424242, orders_csv(1).encode())


def test_cli_import_reports_counts_and_conflicts(organiser: Organiser, tmp_path: object) -> None:
    from pathlib import Path

    event_id = organiser.create_event()
    path = Path(str(tmp_path)) / "orders.csv"
    path.write_text(orders_csv(30, tickets=2))
    organiser.import_csv(event_id, HEADER + "NO-0000001,oSomeoneElse,,2\n")

    result = CliRunner().invoke(app, ["import", "--event", str(event_id), str(path)])

    assert result.exit_code == 0, result.output
    assert "30 rows: 29 new orders (58 tickets), 0 unchanged, 1 conflicts" in result.output
    assert "conflict line 3: order_no 'NO-0000001'" in result.output


def test_cli_import_of_a_malformed_file_fails_with_line_numbers(organiser: Organiser, tmp_path: object) -> None:
    from pathlib import Path

    event_id = organiser.create_event()
    path = Path(str(tmp_path)) / "orders.jsonl"
    path.write_bytes(
        b'{"order_no":"A","openid":"oA","ticket_count":1}\n{"order_no":"B","openid":"oB","ticket_count":0}\n'
    )

    result = CliRunner().invoke(app, ["import", "-e", str(event_id), str(path)])

    assert result.exit_code == 1
    assert "import rejected, nothing stored" in result.output
    assert "line 2: ticket_count must be 1..100, got 0" in result.output
    assert _snapshot(event_id) == ([], (0, 0))
