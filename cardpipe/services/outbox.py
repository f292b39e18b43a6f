"""The transactional outbox: work and the intent to queue it commit in one transaction.

A writer adds an intent (actor name and arguments) with :func:`add` in the transaction that
makes the work (an inbox row, a pre-issue start, a planner's chunks…). After the commit, the
writer tries to hand the intent to the broker at once; whatever it could not hand over (Redis
away, the process died) the relay of every worker process delivers within about a second
(``workers.outbox``). So a committed piece of work always has a message, or an intent that
becomes one: nothing waits for a sweep to be found again.

An intent's row lives until its message's work is done (or dead-lettered): ``sent_at`` says it
was handed to the broker, :func:`drop` deletes it. Should Redis come back without its data, every
intent still open is sent again (:func:`resend_open`); every actor is idempotent, so a message
that had in fact been processed changes nothing the second time.

Invariants: an intent is added in the writer's transaction, never after it; ``sent_at`` only
goes from null to a time, except in :func:`resend_open`, which puts every open intent back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.db import rowcount
from models import OutboxMessage

Executor = Session | Connection


@dataclass(frozen=True, slots=True)
class Intent:
    id: int
    actor: str
    args: list[Any]


def add(executor: Executor, actor: str, *args: Any) -> Intent:
    """Record that ``actor`` is to run with ``args`` once this transaction commits."""
    return add_many(executor, actor, [list(args)])[0]


def add_many(executor: Executor, actor: str, arg_lists: Sequence[Sequence[Any]]) -> list[Intent]:
    """One intent per argument list, in one round trip, in the same order."""
    if not arg_lists:
        return []
    now = clock.now()
    rows = [{"actor": actor, "args": json.dumps(list(args)), "created_at": now} for args in arg_lists]
    result = executor.execute(insert(OutboxMessage).returning(OutboxMessage.id, sort_by_parameter_order=True), rows)
    return [Intent(intent_id, actor, list(args)) for intent_id, args in zip(result.scalars(), arg_lists, strict=True)]


def take_unsent(session: Session, *, older_than_s: float, limit: int = 500) -> list[Intent]:
    """Unsent intents at least ``older_than_s`` old (younger ones are still their writer's to
    send), oldest first, locked for this transaction; those another relay holds are skipped."""
    cutoff = clock.now() - timedelta(seconds=older_than_s)
    rows = session.execute(_UNSENT, {"cutoff": cutoff, "limit": limit})
    return [Intent(row.id, row.actor, json.loads(row.args)) for row in rows]


#: Built once: every worker's relay polls it twice a second.
_UNSENT = (
    select(OutboxMessage.id, OutboxMessage.actor, OutboxMessage.args)
    .where(
        OutboxMessage.sent_at.is_(None),
        OutboxMessage.created_at <= bindparam("cutoff", type_=OutboxMessage.__table__.c.created_at.type),
    )
    .order_by(OutboxMessage.id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)


def mark_sent(executor: Executor, ids: Sequence[int]) -> None:
    if ids:
        executor.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(list(ids)), OutboxMessage.sent_at.is_(None))
            .values(sent_at=clock.now())
            .execution_options(synchronize_session=False)
        )


def drop(executor: Executor, ids: Sequence[int]) -> None:
    """Forget intents: their messages did their work (or were dead-lettered)."""
    if ids:
        executor.execute(delete(OutboxMessage).where(OutboxMessage.id.in_(list(ids))))


def resend_open(session: Session) -> int:
    """Put every sent but unfinished intent back to unsent (the broker lost them); how many."""
    result = session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.sent_at.is_not(None))
        .values(sent_at=None)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


def open_count(session: Session) -> tuple[int, int]:
    """(unsent, sent but unfinished) intents: for the ops page and the tests."""
    unsent = session.scalar(select(func.count()).where(OutboxMessage.sent_at.is_(None))) or 0
    sent = session.scalar(select(func.count()).where(OutboxMessage.sent_at.is_not(None))) or 0
    return int(unsent), int(sent)
