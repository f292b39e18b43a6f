"""Engine and session factory. One engine per process, created from settings on first use.

Each process's connection budget is ``pool + overflow`` (:class:`PoolBudget`); the sum over all
processes must stay under PostgreSQL's ``max_connections``, or the processes go through a
transaction-mode pooler (``db_transaction_pooler``: no server-side prepared statements).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Label,
    Result,
    bindparam,
    create_engine,
    event,
    func,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, DisconnectionError, StatementError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.types import TypeEngine

from cardpipe.settings import Settings, get_settings

#: The pool of a process whose concurrency is not known (an app served without ``cardpipe api``).
DEFAULT_POOL_SIZE = 10
DEFAULT_MAX_OVERFLOW = 20


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    """WAL lets readers run beside the one writer; ``synchronous=NORMAL`` skips the fsync on
    every commit (WAL stays consistent after a crash of any process; only a power cut can lose
    the last commits), without which each commit holds the single write lock for a disk flush
    and the demo's claim stage is bound by fsyncs. SQLite is the embedded demo's database: a
    deferred transaction that reads, then writes after another writer committed, fails at once
    with "database is locked" (it cannot wait), so concurrent clients must retry; production
    runs on PostgreSQL."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@dataclass(frozen=True, slots=True)
class PoolBudget:
    size: int
    max_overflow: int
    timeout_s: float
    #: False behind a transaction-mode pooler: psycopg prepares nothing server-side.
    prepared_statements: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> PoolBudget:
        """The settings' pool, or one following the process's concurrency (``process_threads``):
        one connection per thread kept, two more per thread at peaks (a transaction that reads
        a credential the store must refresh, or records a quota block, opens another)."""
        threads = settings.process_threads
        size = settings.db_pool_size or threads or DEFAULT_POOL_SIZE
        overflow = settings.db_max_overflow
        if overflow is None:
            overflow = 2 * threads if threads else DEFAULT_MAX_OVERFLOW
        return cls(size, overflow, settings.db_pool_timeout_s, not settings.db_transaction_pooler)


def make_engine(url: str, budget: PoolBudget | None = None) -> Engine:
    if url.startswith("sqlite"):
        database = url.split("///", 1)[-1]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    budget = budget or PoolBudget(DEFAULT_POOL_SIZE, DEFAULT_MAX_OVERFLOW, 30.0)
    connect_args = {} if budget.prepared_statements else {"prepare_threshold": None}
    engine = create_engine(
        url,
        pool_size=budget.size,
        max_overflow=budget.max_overflow,
        pool_timeout=budget.timeout_s,
        connect_args=connect_args,
    )
    _ping_when_idle(engine)
    return engine


#: A pooled connection that rested longer than this is pinged before it is handed out.
PING_AFTER_IDLE_S = 1.0
_RESTED_SINCE = "cardpipe_rested_since"


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's ``pool_pre_ping``, for connections that rested: one that sat in the pool over
    ``PING_AFTER_IDLE_S`` (PostgreSQL or the network may have dropped it meanwhile) is pinged, and
    replaced if the ping fails; one handed back moments ago is not. A busy process reuses its
    connections within milliseconds, and a ping on each would be a round trip per transaction. A
    connection that broke in that moment fails its transaction like one broken in use: the caller
    retries (workers) or answers 503 (the api), and the pool drops every connection opened before
    the failure."""

    def rested(_dbapi: DBAPIConnection, record: ConnectionPoolEntry, *_: object) -> None:
        record.info[_RESTED_SINCE] = time.monotonic()

    def ping_if_rested(dbapi: DBAPIConnection, record: ConnectionPoolEntry, _proxy: object) -> None:
        if time.monotonic() - record.info.get(_RESTED_SINCE, 0.0) < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi)
        except Exception as exc:  # the pool replaces the connection and tries again
            raise DisconnectionError(f"a pooled connection no longer answers: {exc}") from exc

    event.listen(engine, "connect", rested)
    event.listen(engine, "checkin", rested)
    event.listen(engine, "checkout", ping_if_rested)


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    settings = get_settings()
    return make_engine(settings.effective_database_url, PoolBudget.from_settings(settings))


@lru_cache(maxsize=1)
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any exception."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def autocommit(engine: Engine) -> Iterator[Connection]:
    """A connection of ``engine`` on which every statement commits by itself: for a write that
    is one statement, with no BEGIN and COMMIT round trips around it."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        yield connection


_PSYCOPG = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]


@contextmanager
def driver_autocommit(engine: Engine) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection's own psycopg connection, in autocommit mode, for the one-statement
    writes of the hottest paths (every push): SQLAlchemy's Connection, its isolation-level switch
    and its execution context cost twice the CPU of the statement's own round trip (146 against
    60 µs measured). Statements are SQL text with ``%(name)s`` parameters (:func:`driver_sql`).
    The driver's errors are raised as SQLAlchemy's (``DBAPIError`` and its kinds), as from a
    Connection; a connection that broke is dropped, and the pool with it (as a Connection drops
    every pooled connection on a disconnect: the others are likely dead too)."""
    try:
        pooled = engine.raw_connection()
    except psycopg.Error as exc:  # refused: the database is away
        raise _as_sqlalchemys(exc, engine, invalidated=True) from exc
    driver = pooled.driver_connection
    if not isinstance(driver, psycopg.Connection):
        pooled.close()
        raise TypeError(f"driver_autocommit needs psycopg on PostgreSQL, not {engine.dialect.name}")
    try:
        driver.autocommit = True
        try:
            yield driver
        finally:
            driver.autocommit = False
    except psycopg.Error as exc:
        broken = driver.closed or driver.broken
        if broken:  # as a Connection does on a disconnect: every pooled connection is suspect
            pooled.invalidate(exc)
            engine.dispose(close=False)
        raise _as_sqlalchemys(exc, engine, invalidated=broken) from exc
    finally:
        pooled.close()


def _as_sqlalchemys(exc: psycopg.Error, engine: Engine, *, invalidated: bool) -> StatementError:
    return DBAPIError.instance(
        None, None, exc, psycopg.Error, connection_invalidated=invalidated, dialect=engine.dialect
    )


def driver_sql(statement: ClauseElement) -> tuple[str, dict[str, Any]]:
    """``statement`` compiled for psycopg on PostgreSQL (compile it once): its SQL with
    ``%(name)s`` parameters and the values of the parameters it set itself (literals)."""
    compiled = statement.compile(dialect=_PSYCOPG)
    return str(compiled), {name: value for name, value in compiled.params.items() if value is not None}


def reset() -> None:
    """Drop the cached engine (tests and the demo point processes at another database)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()


def rowcount(result: Result[*tuple[Any, ...]]) -> int:
    """The rows an UPDATE, INSERT or DELETE run through a Session matched. Its result is a
    cursor result, which ``Session.execute``'s signature does not say."""
    if not isinstance(result, CursorResult):
        raise TypeError(f"a DML statement's result is a CursorResult, not {type(result).__name__}")
    return result.rowcount


def unnested(columns: Mapping[str, type[TypeEngine[Any]] | TypeEngine[Any]]) -> list[Label[Any]]:
    """PostgreSQL's ``unnest`` of one array parameter per column, each labelled with its name: a
    batch's rows sent as one array per column, so the statement's text (and psycopg's cached
    parse of it) is the same whatever the batch's size. Select them to read the rows."""
    return [func.unnest(bindparam(name, type_=postgresql.ARRAY(kind))).label(name) for name, kind in columns.items()]
