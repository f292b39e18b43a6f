"""The hottest one-statement writes go through the driver (``db.driver_autocommit``): what they
raise is SQLAlchemy's, as from a Connection, so the callers' outage handling (503, riding out a
restart) sees the same errors; a connection that broke is dropped, never handed out again; one
that only ran a bad statement goes back to the pool as it was (autocommit off)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from cardpipe.db import DEFAULT_POOL_SIZE as POOL_SIZE
from cardpipe.db import driver_autocommit
from cardpipe.routes.outages import database_unreachable


def test_a_bad_statement_is_sqlalchemys_error_and_the_connection_stays_usable(engine: Engine) -> None:
    with pytest.raises(ProgrammingError) as raised, driver_autocommit(engine) as driver:
        driver.execute("SELECT no_such_column")
    assert not database_unreachable(raised.value)
    with driver_autocommit(engine) as driver:
        assert driver.execute("SELECT 1").fetchone() == (1,)
    with engine.connect() as connection:  # back in the pool as SQLAlchemy handed it out
        driver_connection = connection.connection.driver_connection
        assert driver_connection is not None and driver_connection.autocommit is False
        assert connection.execute(text("SELECT 2")).scalar_one() == 2


def test_a_statement_commits_by_itself(engine: Engine) -> None:
    with driver_autocommit(engine) as driver:
        driver.execute("CREATE TABLE IF NOT EXISTS driver_autocommit_probe (n int)")
        driver.execute("INSERT INTO driver_autocommit_probe VALUES (1)")
    with engine.begin() as connection:  # another connection sees it: no COMMIT was needed
        assert connection.execute(text("SELECT count(*) FROM driver_autocommit_probe")).scalar_one() == 1
        connection.execute(text("DROP TABLE driver_autocommit_probe"))


def test_a_connection_that_broke_is_unreachable_and_dropped_from_the_pool(engine: Engine) -> None:
    with pytest.raises(DBAPIError) as raised, driver_autocommit(engine) as driver:
        driver.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    assert isinstance(raised.value, OperationalError) and database_unreachable(raised.value)
    assert raised.value.connection_invalidated
    for _ in range(POOL_SIZE + 1):  # no connection handed out is the dead one
        with driver_autocommit(engine) as driver:
            assert driver.execute("SELECT 1").fetchone() == (1,)
