"""Suite-wide fixtures: a private PostgreSQL database and a Redis db for this run.

Every test that touches a service asks for it through these fixtures, which skip with a
how-to-start message when the service is down, unless ``CI=true`` (then they fail).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from cryptography.fernet import Fernet
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from cardpipe import db as cardpipe_db
from cardpipe import secretbox
from cardpipe.migrate import upgrade
from cardpipe.settings import get_settings
from tests.services import HOW_TO_START, admin_database_url, in_ci, libpq_url, postgres_problem, redis_problem
from tests.services import redis_url as configured_redis_url


def _unavailable(name: str, problem: str) -> None:
    message = f"{name} unreachable ({problem}); start it with: {HOW_TO_START[name]}"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session", autouse=True)
def _isolated_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test run gets its own data dir and secret key; nothing leaks from the shell."""
    data_dir = tmp_path_factory.mktemp("cardpipe-data")
    saved = {k: os.environ.get(k) for k in ("CARDPIPE_DATA_DIR", "CARDPIPE_SECRET_KEYS")}
    os.environ["CARDPIPE_DATA_DIR"] = str(data_dir)
    os.environ["CARDPIPE_SECRET_KEYS"] = Fernet.generate_key().decode()
    get_settings.cache_clear()
    secretbox.reset_cache()
    yield data_dir
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()
    secretbox.reset_cache()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this run, migrated to head, dropped at the end."""
    problem = postgres_problem()
    if problem:
        _unavailable("PostgreSQL", problem)
    admin = make_url(admin_database_url())
    name = f"cardpipe_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(admin_database_url()), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    previous = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    cardpipe_db.reset()
    yield url
    cardpipe_db.reset()
    if previous is None:
        os.environ.pop("DATABASE_URL", None)
    else:
        os.environ["DATABASE_URL"] = previous
    get_settings.cache_clear()
    with psycopg.connect(libpq_url(admin_database_url()), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def engine(database_url: str) -> Engine:
    """The app's engine on the test database, with every table emptied first."""
    engine = cardpipe_db.get_engine()
    with engine.begin() as conn:
        tables = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")
        ).scalars()
        conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
    return engine


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A flushed Redis database, also exported as REDIS_URL for the code under test."""
    problem = redis_problem()
    if problem:
        _unavailable("Redis", problem)
    url = configured_redis_url()
    client = redis.Redis.from_url(url)
    client.flushdb()
    previous = os.environ.get("REDIS_URL")
    os.environ["REDIS_URL"] = url
    get_settings.cache_clear()
    yield url
    client.flushdb()
    client.close()
    if previous is None:
        os.environ.pop("REDIS_URL", None)
    else:
        os.environ["REDIS_URL"] = previous
    get_settings.cache_clear()
