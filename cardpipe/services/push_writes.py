"""How a push is written: its (timestamp, nonce) pair for the replay guard and its inbox row.

On PostgreSQL both are one statement (data-modifying CTEs: one snapshot, one round trip, and on
an autocommit connection its own transaction, commit included; sent through the driver, as every
push pays for it: ``db.driver_autocommit``), with the guard's and the inbox's rules
(``push_guard``, ``inbox``):

- the pair is inserted with its body's digest, ``ON CONFLICT DO NOTHING``;
- the inbox row is inserted, ``ON CONFLICT (dedupe_key) DO NOTHING``, only if the pair is new or
  is recorded with this very digest (WeChat's redelivery, which the inbox's dedupe answers);
- the statement answers whether the pair was new, the digest recorded before, and the row's id.

A pair recorded with another digest is a replay: nothing is written and :func:`store` raises
``ReplayedPush``. One outcome the statement cannot decide: the pair was recorded by a concurrent
push that committed while this statement waited for it, so the statement's snapshot does not
show its digest. Then the pair and the row are written statement by statement
(``push_guard.check_not_replayed``, then ``inbox.store``), each seeing that commit; on the
autocommit connection these commit one by one, and a crash between them leaves a recorded pair
without a row, which WeChat's retry of the same push (same pair, same body) then stores.

Elsewhere (SQLite: the embedded demo) the writes are statement by statement, in one transaction.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, exists, literal, or_, select
from sqlalchemy.dialects import postgresql

from cardpipe import clock
from cardpipe.db import autocommit, driver_autocommit, driver_sql
from cardpipe.services import inbox, push_guard
from models import InboxItem, InboxSource, PushNonce

_nonces = PushNonce.__table__
_inbox = InboxItem.__table__
_PAIR = ("official_account_id", "timestamp", "nonce")
_ROW = ("source", "kind", "dedupe_key", "payload", "official_account_id", "received_at")


def _bind(table: Any, name: str) -> Any:
    return bindparam(name, type_=table.c[name].type)


@cache
def _statement() -> tuple[str, dict[str, Any]]:
    """The pair, the row if the pair allows it, and what happened, compiled once (every push runs
    it): SQL text and the values of its literals."""
    recorded = (
        postgresql.insert(_nonces)
        .values({name: _bind(_nonces, name) for name in (*_PAIR, "body_sha256", "received_at")})
        .on_conflict_do_nothing()
        .returning(_nonces.c.body_sha256)
        .cte("recorded")
    )
    seen = select(_nonces.c.body_sha256).where(*(_nonces.c[name] == _bind(_nonces, name) for name in _PAIR)).cte("seen")
    allowed = or_(
        exists(select(recorded.c.body_sha256)),
        exists(select(seen.c.body_sha256).where(seen.c.body_sha256 == _bind(_nonces, "body_sha256"))),
    )
    stored = (
        postgresql.insert(_inbox)
        .from_select(
            [*_ROW, "attempts"],
            select(*(_bind(_inbox, name) for name in _ROW), literal(0)).where(allowed),
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(_inbox.c.id)
        .cte("stored")
    )
    statement = select(
        exists(select(recorded.c.body_sha256)).label("recorded"),
        select(seen.c.body_sha256).scalar_subquery().label("seen"),
        select(stored.c.id).scalar_subquery().label("inbox_id"),
    )
    return driver_sql(statement)


def store(
    engine: Engine,
    *,
    official_account_id: int,
    timestamp: int,
    nonce: str,
    body: bytes,
    kind: str,
    dedupe_key: str,
    payload: str,
) -> int | None:
    """Record the push's pair and store its inbox row: the new row's id, or None for a push
    already stored. Raises ``push_guard.ReplayedPush`` (writing nothing) if the pair came before
    with another body."""
    pair = {"official_account_id": official_account_id, "timestamp": timestamp, "nonce": nonce}
    row = {"kind": kind, "dedupe_key": dedupe_key, "payload": payload, "official_account_id": official_account_id}
    if engine.dialect.name != "postgresql":
        with engine.begin() as connection:
            return _statement_by_statement(connection, pair, row, body)
    digest = push_guard.body_digest(body)
    sql, literals = _statement()
    parameters = {
        **literals,
        **pair,
        **row,
        "body_sha256": digest,
        "source": InboxSource.WECHAT.value,
        "received_at": clock.now(),
    }
    with driver_autocommit(engine) as driver:
        recorded, seen, inbox_id = driver.execute(sql, parameters).fetchone() or (False, None, None)
    if recorded or seen == digest:
        return int(inbox_id) if inbox_id is not None else None
    push_guard.refuse_another_body(seen, digest)
    with autocommit(engine) as connection:
        return _statement_by_statement(connection, pair, row, body)


def _statement_by_statement(
    connection: Connection, pair: dict[str, Any], row: dict[str, Any], body: bytes
) -> int | None:
    push_guard.check_not_replayed(connection, **pair, body=body)
    return inbox.store(connection, source=InboxSource.WECHAT, **row)
