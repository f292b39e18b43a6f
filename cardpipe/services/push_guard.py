"""Freshness and replay checks of WeChat pushes.

A push's ``timestamp`` must lie within ``push_max_age_s`` of now (WeChat retries a push three
times within about 15 s, with the same query and body; the window also absorbs clock skew). Its
(timestamp, nonce) pair is recorded in PostgreSQL with a digest of the body: the same pair again
with the same body is WeChat's redelivery (the inbox's dedupe answers it), with another body it
is a forgery built on a captured query string and is refused. The guard lives in the database
the push is stored in, so it adds no dependency on Redis; pairs older than the window are pruned
by the inbox sweep (they would be refused by the window anyway). A stored push records its pair
and its inbox row together (``push_writes``: on PostgreSQL in one statement with these rules).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from functools import cache

from sqlalchemy import Connection, Executable, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.db import rowcount
from models import PushNonce
from wechat.errors import SignatureError


class StalePush(SignatureError):
    """The push's timestamp is outside the accepted window."""


class ReplayedPush(SignatureError):
    """The push's (timestamp, nonce) was already used for another body."""


def parse_timestamp(timestamp: str) -> int:
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise StalePush(f"timestamp {timestamp[:16]!r} is not Unix seconds")
    return int(timestamp)


def check_fresh(timestamp: str, *, now: float, max_age_s: float) -> int:
    """The push's timestamp as an int, if it is within ``max_age_s`` of ``now``."""
    stamp = parse_timestamp(timestamp)
    if abs(now - stamp) > max_age_s:
        raise StalePush(f"timestamp {stamp} is more than {max_age_s:g} s away from now")
    return stamp


def check_not_replayed(
    executor: Connection, *, official_account_id: int, timestamp: int, nonce: str, body: bytes
) -> None:
    """Record (timestamp, nonce) with the body's digest, or raise :class:`ReplayedPush` if the
    pair is already recorded with another body."""
    digest = body_digest(body)
    pair = {"official_account_id": official_account_id, "timestamp": timestamp, "nonce": nonce}
    recorded = executor.execute(
        _record(executor.dialect.name), {**pair, "body_sha256": digest, "received_at": clock.now()}
    )
    if recorded.scalar_one_or_none() is not None:
        return
    refuse_another_body(executor.execute(_SEEN, pair).scalar_one_or_none(), digest)


def body_digest(body: bytes) -> str:
    """What a pair is recorded with: the body's sha256, hex."""
    return hashlib.sha256(body).hexdigest()


def refuse_another_body(seen: str | None, digest: str) -> None:
    """Raise :class:`ReplayedPush` if the pair is recorded (``seen``) with another body's digest."""
    if seen is not None and seen != digest:
        raise ReplayedPush("this timestamp and nonce were already used for another push")


@cache
def _record(dialect: str) -> Executable:
    """The pair's ``INSERT … ON CONFLICT DO NOTHING`` of a dialect, built once (every push runs it)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    columns = ("official_account_id", "timestamp", "nonce", "body_sha256", "received_at")
    return (
        insert(PushNonce)
        .values({name: bindparam(name, type_=PushNonce.__table__.c[name].type) for name in columns})
        .on_conflict_do_nothing()
        .returning(PushNonce.body_sha256)
    )


_SEEN = select(PushNonce.body_sha256).where(
    PushNonce.official_account_id == bindparam("official_account_id"),
    PushNonce.timestamp == bindparam("timestamp"),
    PushNonce.nonce == bindparam("nonce"),
)


def prune(session: Session, *, older_than_s: float) -> int:
    """Forget pairs received more than ``older_than_s`` ago; returns how many."""
    cutoff = clock.now() - timedelta(seconds=older_than_s)
    result = session.execute(delete(PushNonce).where(PushNonce.received_at < cutoff))
    return rowcount(result)
