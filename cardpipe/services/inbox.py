"""The inbox: every client callback and WeChat push, stored raw before anything acts on it.

``store`` is one ``INSERT … ON CONFLICT (dedupe_key) DO NOTHING``: a redelivered callback or push
inserts nothing and is reported as a duplicate. Processing takes the row with ``FOR UPDATE SKIP
LOCKED`` (two workers handed the same message do not both call WeChat), does its guarded updates
and marks the row processed in the same transaction, so a message run twice finds it done.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Executable,
    String,
    Text,
    Update,
    bindparam,
    cast,
    exists,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.db import session_scope, unnested
from models import InboxItem, InboxSource, OutboxMessage
from models.base import UTCDateTime

#: ``last_error`` is a diagnosis for ops, not a log: keep it short.
MAX_ERROR_LENGTH = 500


def store(
    executor: Session | Connection,
    *,
    source: str,
    kind: str,
    dedupe_key: str,
    payload: str,
    official_account_id: int | None = None,
) -> int | None:
    """The new row's id, or None when ``dedupe_key`` is already stored (a duplicate). On an
    autocommit connection it is a single round trip to the database, commit included."""
    bind = executor.get_bind() if isinstance(executor, Session) else executor
    values = {
        "source": source,
        "kind": kind,
        "dedupe_key": dedupe_key,
        "payload": payload,
        "official_account_id": official_account_id,
        "received_at": clock.now(),
    }
    return executor.execute(_insert(bind.dialect.name), values).scalar_one_or_none()


@cache
def _insert(dialect: str) -> Executable:
    """The one ``INSERT … ON CONFLICT DO NOTHING RETURNING id`` of a dialect, built once (building
    it per row was most of a stored push's statement cost), on the table: on the ORM entity a
    ``Session`` runs it through its bulk-insert machinery, which adds nothing here."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = InboxItem.__table__
    columns = ("source", "kind", "dedupe_key", "payload", "official_account_id", "received_at")
    return (
        insert(table)
        .values({**{name: bindparam(name, type_=table.c[name].type) for name in columns}, "attempts": 0})
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(table.c.id)
    )


def take(session: Session, inbox_id: int) -> str | None:
    """The payload of the unprocessed row, locked for this transaction; None if it is done or
    being done."""
    return session.scalars(
        select(InboxItem.payload)
        .where(InboxItem.id == inbox_id, InboxItem.processed_at.is_(None))
        .with_for_update(skip_locked=True)
    ).one_or_none()


def take_result(session: Session, inbox_id: int) -> tuple[str, datetime] | None:
    """:func:`take` for a client result: its payload and when it was received."""
    row = session.execute(
        select(InboxItem.payload, InboxItem.received_at)
        .where(InboxItem.id == inbox_id, InboxItem.processed_at.is_(None))
        .with_for_update(skip_locked=True)
    ).one_or_none()
    return None if row is None else (row.payload, row.received_at)


def take_push(session: Session, inbox_id: int) -> tuple[str, int | None] | None:
    """:func:`take` for a push: its payload and the official account whose URL it arrived at
    (the only tenant whose tickets it may touch)."""
    row = session.execute(
        select(InboxItem.payload, InboxItem.official_account_id)
        .where(InboxItem.id == inbox_id, InboxItem.processed_at.is_(None))
        .with_for_update(skip_locked=True)
    ).one_or_none()
    return None if row is None else (row.payload, row.official_account_id)


#: The drains' take of unprocessed rows, built once: a drain polls it several times a second, and
#: building the statement (and its cache key) cost more than running it.
_UNPROCESSED = (
    select(InboxItem.id, InboxItem.payload, InboxItem.official_account_id, InboxItem.received_at)
    .where(
        InboxItem.processed_at.is_(None),
        InboxItem.source == bindparam("source"),
        InboxItem.attempts < bindparam("max_attempts"),
    )
    .order_by(InboxItem.id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
#: The client results among them not passed on to the one-row actor (an open outbox intent to run
#: it with the row's id).
_UNPROCESSED_NOT_PASSED = _UNPROCESSED.where(
    ~exists().where(
        OutboxMessage.actor == bindparam("passed_to"),
        OutboxMessage.args == literal("[") + cast(InboxItem.id, String) + literal("]"),
    )
)


def take_pushes(session: Session, *, limit: int, max_attempts: int) -> list[tuple[int, str, int | None]]:
    """Up to ``limit`` unprocessed pushes tried fewer than ``max_attempts`` times, oldest first,
    locked for this transaction (rows another transaction holds are skipped): (id, payload, the
    official account whose URL it arrived at)."""
    rows = session.execute(
        _UNPROCESSED, {"source": InboxSource.WECHAT, "max_attempts": max_attempts, "limit": limit}
    ).all()
    return [(row.id, row.payload, row.official_account_id) for row in rows]


def take_results(session: Session, *, limit: int, max_attempts: int, passed_to: str) -> list[tuple[int, str, datetime]]:
    """:func:`take_pushes` for client results — (id, payload, when it was received) — leaving out
    the rows already passed on to the one-row actor ``passed_to``."""
    parameters = {"source": InboxSource.CLIENT, "max_attempts": max_attempts, "limit": limit, "passed_to": passed_to}
    rows = session.execute(_UNPROCESSED_NOT_PASSED, parameters).all()
    return [(row.id, row.payload, row.received_at) for row in rows]


_INBOX = InboxItem.__table__


def _mark_processed(given: Callable[[str], Any]) -> Update:
    """:func:`mark_processed` of the rows ``given`` names (``b_id``, ``b_note`` → their value); a
    row without a note keeps its last error."""
    return (
        update(_INBOX)
        .where(_INBOX.c.id == given("b_id"), _INBOX.c.processed_at.is_(None))
        .values(
            processed_at=bindparam("now", type_=UTCDateTime),
            attempts=_INBOX.c.attempts + 1,
            last_error=func.coalesce(given("b_note"), _INBOX.c.last_error),
        )
    )


_MARK_TYPES = {"b_id": BigInteger, "b_note": Text}
#: One row (executed for every row of a batch).
_MARK_ONE = _mark_processed(lambda name: bindparam(name, type_=_MARK_TYPES[name]))
_MARKED = select(*unnested(_MARK_TYPES)).subquery("marked")
#: Every row of a batch at once, from an array of ids and one of notes (PostgreSQL).
_MARK_ALL = _mark_processed(lambda name: _MARKED.c[name])


def mark_processed_many(session: Session, notes: dict[int, str | None]) -> None:
    """:func:`mark_processed` for many rows (inbox id → note), in one statement: on PostgreSQL
    from two arrays, elsewhere executed for every row."""
    if not notes:
        return
    rows = {inbox_id: None if note is None else note[:MAX_ERROR_LENGTH] for inbox_id, note in notes.items()}
    connection, now = session.connection(), clock.now()
    if connection.dialect.name == "postgresql":
        connection.execute(_MARK_ALL, {"b_id": list(rows), "b_note": list(rows.values()), "now": now})
    else:
        connection.execute(
            _MARK_ONE, [{"b_id": inbox_id, "b_note": note, "now": now} for inbox_id, note in rows.items()]
        )


def mark_processed(session: Session, inbox_id: int, *, note: str | None = None) -> None:
    """Done. ``note`` records why a row was done without effect (unknown ticket, bad code…)."""
    values: dict[str, object] = {"processed_at": clock.now(), "attempts": InboxItem.attempts + 1}
    if note is not None:
        values["last_error"] = note[:MAX_ERROR_LENGTH]
    session.execute(
        update(InboxItem)
        .where(InboxItem.id == inbox_id, InboxItem.processed_at.is_(None))
        .values(values)
        .execution_options(synchronize_session=False)
    )


def record_failure(inbox_id: int, error: BaseException) -> None:
    """Count a failed attempt in its own transaction (the attempt's own one was rolled back).
    The text is the exception's message: typed WeChat errors carry no secret."""
    with session_scope() as session:
        session.execute(
            update(InboxItem)
            .where(InboxItem.id == inbox_id)
            .values(attempts=InboxItem.attempts + 1, last_error=f"{type(error).__name__}: {error}"[:MAX_ERROR_LENGTH])
            .execution_options(synchronize_session=False)
        )


def stale_unprocessed(
    session: Session, *, source: str, older_than_s: float, max_attempts: int, limit: int
) -> list[int]:
    """Ids of rows of ``source`` still unprocessed after ``older_than_s`` and tried fewer than
    ``max_attempts`` times: their message was lost or is failing; the sweeper sends them again."""
    cutoff = clock.now() - timedelta(seconds=older_than_s)
    return list(
        session.scalars(
            select(InboxItem.id)
            .where(
                InboxItem.processed_at.is_(None),
                InboxItem.source == source,
                InboxItem.received_at < cutoff,
                InboxItem.attempts < max_attempts,
            )
            .order_by(InboxItem.received_at)
            .limit(limit)
        )
    )
