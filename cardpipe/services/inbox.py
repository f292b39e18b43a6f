"""The inbox: every client callback and WeChat push, stored raw before anything acts on it.

``store`` is one ``INSERT … ON CONFLICT (dedupe_key) DO NOTHING``: a redelivered callback or push
inserts nothing and is reported as a duplicate. Processing takes the row with ``FOR UPDATE SKIP
LOCKED`` (two workers handed the same message do not both call WeChat), does its guarded updates
and marks the row processed in the same transaction, so a message run twice finds it done.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache

from sqlalchemy import Connection, Executable, String, bindparam, cast, exists, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.db import session_scope
from models import InboxItem, InboxSource, OutboxMessage

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


def take_pushes(session: Session, *, limit: int, max_attempts: int) -> list[tuple[int, str, int | None]]:
    """Up to ``limit`` unprocessed pushes tried fewer than ``max_attempts`` times, oldest first,
    locked for this transaction (rows another transaction holds are skipped): (id, payload, the
    official account whose URL it arrived at)."""
    rows = session.execute(
        select(InboxItem.id, InboxItem.payload, InboxItem.official_account_id)
        .where(
            InboxItem.processed_at.is_(None),
            InboxItem.source == InboxSource.WECHAT,
            InboxItem.attempts < max_attempts,
        )
        .order_by(InboxItem.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    return [(row.id, row.payload, row.official_account_id) for row in rows]


def take_results(session: Session, *, limit: int, max_attempts: int, passed_to: str) -> list[tuple[int, str, datetime]]:
    """:func:`take_pushes` for client results — (id, payload, when it was received) — leaving out
    the rows already passed on to the one-row actor ``passed_to`` (an open outbox intent to run it
    with the row's id)."""
    passed = exists().where(
        OutboxMessage.actor == passed_to,
        OutboxMessage.args == literal("[") + cast(InboxItem.id, String) + literal("]"),
    )
    rows = session.execute(
        select(InboxItem.id, InboxItem.payload, InboxItem.received_at)
        .where(
            InboxItem.processed_at.is_(None),
            InboxItem.source == InboxSource.CLIENT,
            InboxItem.attempts < max_attempts,
            ~passed,
        )
        .order_by(InboxItem.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    return [(row.id, row.payload, row.received_at) for row in rows]


def mark_processed_many(session: Session, notes: dict[int, str | None]) -> None:
    """:func:`mark_processed` for many rows (inbox id → note): those without a note in one update."""
    plain = [inbox_id for inbox_id, note in notes.items() if note is None]
    if plain:
        session.execute(
            update(InboxItem)
            .where(InboxItem.id.in_(plain), InboxItem.processed_at.is_(None))
            .values(processed_at=clock.now(), attempts=InboxItem.attempts + 1)
            .execution_options(synchronize_session=False)
        )
    for inbox_id, note in notes.items():
        if note is not None:
            mark_processed(session, inbox_id, note=note)


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
