"""Suite-wide fixtures: a private PostgreSQL database and a Redis db for this run.

Every test that touches a service asks for it through these fixtures, which skip with a
how-to-start message when the service is down, unless ``CI=true`` (then they fail).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import psycopg
import pytest
import redis
from cryptography.fernet import Fernet
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from cardpipe import db as cardpipe_db
from cardpipe import runtime as cardpipe_runtime
from cardpipe import secretbox
from cardpipe.migrate import upgrade
from cardpipe.services import accounts
from cardpipe.settings import get_settings
from tests.backing_services import HOW_TO_START, admin_database_url, in_ci, libpq_url, postgres_problem, redis_problem
from tests.backing_services import redis_url as configured_redis_url
from tests.settings_env import environment
from tests.worlds import MakeWorld, World, new_world
from wechat.fake import FakeWeChatControl, FakeWeChatServer

PUSH_TIMEOUT_S = 0.3
ADMIN_TOKEN = "test-admin-token"
GATE_TOKEN = "test-gate-token"
# Actors bind to the broker when ``workers`` is first imported, so the test Redis must be the
# configured one before any test module is collected.
os.environ["REDIS_URL"] = configured_redis_url()


def _unavailable(name: str, problem: str) -> None:
    message = f"{name} unreachable ({problem}); start it with: {HOW_TO_START[name]}"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session", autouse=True)
def _isolated_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test run gets its own data dir and secret key; nothing leaks from the shell."""
    data_dir = tmp_path_factory.mktemp("cardpipe-data")
    test_values = {
        "CARDPIPE_DATA_DIR": str(data_dir),
        "CARDPIPE_SECRET_KEYS": Fernet.generate_key().decode(),
        "CARDPIPE_ADMIN_TOKENS": ADMIN_TOKEN,
        "CARDPIPE_GATE_TOKENS": GATE_TOKEN,
        "CARDPIPE_WECHAT_BUSY_BACKOFF_S": "0.01",
        # Every simulated user logs in from 127.0.0.1 (the login limit's own test lowers it).
        "CARDPIPE_LOGIN_LIMIT_PER_CLIENT": "1000000",
    }
    saved = {k: os.environ.get(k) for k in test_values}
    os.environ.update(test_values)
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
    """A flushed Redis database (the one REDIS_URL points the code under test at)."""
    problem = redis_problem()
    if problem:
        _unavailable("Redis", problem)
    url = configured_redis_url()
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def broker_worker(redis_url: str, engine: Engine) -> Iterator[dramatiq.Worker]:
    """An in-process dramatiq worker on the real Redis broker, with empty queues."""
    from workers.broker import broker

    broker.flush_all()
    cardpipe_runtime.reset()
    worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=4)
    worker.start()
    yield worker
    worker.stop()
    broker.flush_all()


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeWeChatServer]:
    """The fake WeChat for the whole run; the app's WeChat base URL points at it."""
    with (
        FakeWeChatServer(push_timeout_s=PUSH_TIMEOUT_S, seed=7) as server,
        environment(CARDPIPE_WECHAT_API_BASE=server.url),
    ):
        yield server


@pytest.fixture
def fake(fake_server: FakeWeChatServer) -> Iterator[FakeWeChatControl]:
    """The fake's control client; faults, push settings and the clock are restored after the test
    (pushes are stamped with the fake's clock, and a receiver refuses stale timestamps)."""
    control = FakeWeChatControl(fake_server.url)
    yield control
    control.reset_clock()
    control.clear_faults()
    control.configure(push_timeout_s=PUSH_TIMEOUT_S, push_tries=3, push_retry_delay_s=0)
    control.close()


@pytest.fixture
def make_world(fake: FakeWeChatControl, fake_server: FakeWeChatServer) -> MakeWorld:
    """Builds a fresh OA + MP + person at the fake (see ``tests/worlds.py``)."""

    def make(*, push_url: str | None = None, safe_mode: bool = False) -> World:
        return new_world(fake, fake_server.url, push_url=push_url, safe_mode=safe_mode)

    return make


@pytest.fixture
def cardpipe_world(make_world: MakeWorld, engine: Engine, redis_url: str) -> World:
    """A fresh world registered both at the fake and in cardpipe's database."""
    world = make_world()
    with cardpipe_db.session_scope() as session:
        accounts.upsert_official_account(
            session,
            accounts.OfficialAccountInput(
                appid=world.oa_appid,
                app_secret=world.oa_secret,
                server_token=world.server_token,
                encoding_aes_key=world.aes_key,
                original_id=world.original_id,
                use_stable_token=False,
            ),
        )
        accounts.upsert_mini_program(session, world.mp_appid, world.mp_secret, world.oa_appid)
    cardpipe_runtime.reset()
    return world
