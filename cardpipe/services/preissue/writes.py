"""The dialect-specific ticket writers of a chunk, one round trip per chunk.

On PostgreSQL one ``COPY`` straight into ``tickets`` inside a savepoint; should a unique key refuse
it, the batch goes again through a temp table and ``INSERT … ON CONFLICT DO NOTHING RETURNING``, and
the caller gets back the rows that did not go in. On SQLite an ``executemany INSERT OR IGNORE``
(SQLite has one writer; the transaction takes the write lock first). Every writer inserts its rows
in (order_id, seq) order, which is what makes two transactions wanting the same order serialise.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar, Protocol

import psycopg
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from cardpipe.services.preissue import PreissueError
from cardpipe.services.preissue.batch import TicketBatch
from models import Event, Order, Ticket, TicketState

log = logging.getLogger(__name__)


#: IN lists are sent in slices of this many ids.
ID_SLICE = 1000


class TicketStore(Protocol):
    def orders(self, event_id: int, order_ids: Sequence[int]) -> list[tuple[int, int]]:
        """(id, ticket_count) of those of ``order_ids`` that belong to the event, in id order."""
        ...

    def present_seqs(self, order_ids: Sequence[int]) -> dict[int, set[int]]: ...

    def allocate_ids(self, count: int) -> list[int]: ...

    def insert(self, batch: TicketBatch, indexes: list[int]) -> list[int]:
        """Insert those rows of ``batch``; returns the indexes a unique key kept out."""
        ...


def _slices(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), ID_SLICE):
        yield ids[start : start + ID_SLICE]


def _by_order(rows: Iterable[Any]) -> dict[int, set[int]]:
    present: dict[int, set[int]] = defaultdict(set)
    for order_id, seq in rows:
        present[order_id].add(seq)
    return present


def store_for(session: Session) -> TicketStore:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return _PostgresTickets(session)
    if dialect == "sqlite":
        return _SqliteTickets(session)
    raise PreissueError(f"pre-issue does not support {dialect}")


_COPY_COLUMNS = (
    "id, order_id, seq, code, card_ext, nonce, event_id, card_id, state, ticket_version, timestamp, "
    "signed_at, confirmed_by_client, confirmed_by_wechat, updated_at"
)
_STAGING = "preissue_staging"
# One array parameter instead of an IN list: a thousand bind parameters cost more to render and
# parse than the rows they select. A chunk of consecutive ids (the planner's) is read as a range:
# one index descent instead of one per id.
_PG_ORDERS = "SELECT id, ticket_count FROM orders WHERE event_id = %s AND id = ANY(%s::bigint[]) ORDER BY id"
_PG_ORDERS_RANGE = "SELECT id, ticket_count FROM orders WHERE event_id = %s AND id BETWEEN %s AND %s ORDER BY id"
_PG_PRESENT = "SELECT order_id, seq FROM tickets WHERE order_id = ANY(%s::bigint[])"
_PG_PRESENT_RANGE = "SELECT order_id, seq FROM tickets WHERE order_id BETWEEN %s AND %s"
# nextval() of a name looked up per row costs ten times the increment: the sequence is named once.
_PG_NEW_IDS = "SELECT array_agg(nextval(%s::regclass)) FROM generate_series(1, %s)"
_PG_ID_SEQUENCE = "SELECT pg_get_serial_sequence('tickets', 'id')"


def _dense(sorted_ids: Sequence[int]) -> bool:
    """At least half of the id range is wanted: a range scan reads little that is not."""
    return bool(sorted_ids) and sorted_ids[-1] - sorted_ids[0] < 2 * len(sorted_ids)


def _pg_array(ids: Sequence[int]) -> str:
    """An int array as its text literal: psycopg adapts a list element by element in Python."""
    return "{" + ",".join(map(str, ids)) + "}"


_COPY_NULL = "\\N"


class _PostgresTickets:
    #: The name of the tickets.id sequence (the same in every database of this schema).
    id_sequence: ClassVar[str | None] = None

    def __init__(self, session: Session) -> None:
        self._session = session

    def _driver(self) -> psycopg.Connection[Any]:
        """The session's own psycopg connection (same transaction): rows come back as plain
        tuples, without SQLAlchemy's per-row work."""
        connection = self._session.connection().connection.driver_connection
        assert isinstance(connection, psycopg.Connection)
        return connection

    def orders(self, event_id: int, order_ids: Sequence[int]) -> list[tuple[int, int]]:
        if _dense(order_ids):
            wanted = set(order_ids)
            rows = self._driver().execute(_PG_ORDERS_RANGE, (event_id, order_ids[0], order_ids[-1]))
            return [row for row in rows if row[0] in wanted]
        return self._driver().execute(_PG_ORDERS, (event_id, _pg_array(order_ids))).fetchall()

    def present_seqs(self, order_ids: Sequence[int]) -> dict[int, set[int]]:
        if _dense(order_ids):
            wanted = set(order_ids)
            rows = self._driver().execute(_PG_PRESENT_RANGE, (order_ids[0], order_ids[-1]))
            return _by_order(row for row in rows if row[0] in wanted)
        return _by_order(self._driver().execute(_PG_PRESENT, (_pg_array(order_ids),)).fetchall())

    def allocate_ids(self, count: int) -> list[int]:
        connection = self._driver()
        if _PostgresTickets.id_sequence is None:
            found = connection.execute(_PG_ID_SEQUENCE).fetchone()
            assert found is not None  # the function answers one row
            _PostgresTickets.id_sequence = str(found[0])
        row = connection.execute(_PG_NEW_IDS, (_PostgresTickets.id_sequence, count)).fetchone()
        return list(row[0]) if row and row[0] else []

    def insert(self, batch: TicketBatch, indexes: list[int]) -> list[int]:
        connection = self._driver()
        payload = _copy_rows(batch, indexes)
        try:
            with (
                connection.transaction(),
                connection.cursor().copy(f"COPY tickets ({_COPY_COLUMNS}) FROM STDIN") as copy,
            ):
                copy.write(payload)
            return []
        except psycopg.errors.UniqueViolation:
            log.info("event %s: a unique key refused the COPY; going through ON CONFLICT", batch.event_id)
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} (LIKE tickets INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            cursor.execute(f"TRUNCATE {_STAGING}")
            with cursor.copy(f"COPY {_STAGING} ({_COPY_COLUMNS}) FROM STDIN") as copy:
                copy.write(payload)
            cursor.execute(
                f"INSERT INTO tickets ({_COPY_COLUMNS}) SELECT {_COPY_COLUMNS} FROM {_STAGING} "
                "ORDER BY order_id, seq ON CONFLICT DO NOTHING RETURNING id"
            )
            inserted = {row[0] for row in cursor.fetchall()}
        return [i for i in indexes if batch.ids[i] not in inserted]


def _copy_rows(batch: TicketBatch, indexes: list[int]) -> str:
    """COPY text rows. Every value is digits, hex, a code of the policy's alphanumerics, a
    card_id matching ``CARD_ID`` or cardExt JSON built from those: nothing needs escaping."""
    signed_at = batch.signed_at.isoformat()
    tail = (
        f"\t{batch.event_id}\t{batch.card_id}\t{TicketState.READY.value}\t{batch.version}\t{batch.timestamp}"
        f"\t{signed_at}\tf\tf\t{signed_at}\n"
    )
    ids, order_ids, seqs, codes, exts, nonces = (
        batch.ids,
        batch.order_ids,
        batch.seqs,
        batch.codes,
        batch.exts,
        batch.nonces,
    )
    return "".join(
        f"{ids[i]}\t{order_ids[i]}\t{seqs[i]}\t{codes[i] or _COPY_NULL}\t{exts[i]}\t{nonces[i]}{tail}" for i in indexes
    )


class _SqliteTickets:
    """The embedded demo's store. SQLite has one writer: touching the event row first takes the
    write lock for the whole transaction, which makes ``max(id) + 1`` ids safe."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def orders(self, event_id: int, order_ids: Sequence[int]) -> list[tuple[int, int]]:
        self._session.execute(
            update(Event)
            .where(Event.id == event_id)
            .values(tickets_issued=Event.tickets_issued)
            .execution_options(synchronize_session=False)
        )
        locked: list[tuple[int, int]] = []
        for part in _slices(order_ids):
            query = select(Order.id, Order.ticket_count).where(Order.event_id == event_id, Order.id.in_(part))
            locked.extend((order_id, count) for order_id, count in self._session.execute(query.order_by(Order.id)))
        return locked

    def present_seqs(self, order_ids: Sequence[int]) -> dict[int, set[int]]:
        query = select(Ticket.order_id, Ticket.seq)
        return _by_order(
            row for part in _slices(order_ids) for row in self._session.execute(query.where(Ticket.order_id.in_(part)))
        )

    def allocate_ids(self, count: int) -> list[int]:
        last = self._session.scalar(select(func.coalesce(func.max(Ticket.id), 0))) or 0
        return list(range(last + 1, last + 1 + count))

    def insert(self, batch: TicketBatch, indexes: list[int]) -> list[int]:
        rows = [
            {
                "id": batch.ids[i],
                "event_id": batch.event_id,
                "order_id": batch.order_ids[i],
                "seq": batch.seqs[i],
                "card_id": batch.card_id,
                "code": batch.codes[i],
                "state": TicketState.READY.value,
                "card_ext": batch.exts[i],
                "ticket_version": batch.version,
                "nonce": batch.nonces[i],
                "timestamp": batch.timestamp,
                "signed_at": batch.signed_at,
                "confirmed_by_client": False,
                "confirmed_by_wechat": False,
                "updated_at": batch.signed_at,
            }
            for i in indexes
        ]
        self._session.execute(insert(Ticket.__table__).prefix_with("OR IGNORE"), rows)
        wanted = [batch.ids[i] for i in indexes]
        inserted: set[int] = set()
        for part in _slices(wanted):
            inserted.update(self._session.scalars(select(Ticket.id).where(Ticket.id.in_(part))))
        return [i for i in indexes if batch.ids[i] not in inserted]
