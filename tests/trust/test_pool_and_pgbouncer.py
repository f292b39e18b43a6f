"""The connection budget: pool size and overflow are settings, defaulting from the process's
own concurrency, and the stack works behind PgBouncer in transaction mode (a real PgBouncer,
started here on a free port, in front of the test database)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import dramatiq
import pytest
import requests
from anyio import to_thread
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

from api import app_lifespan, create_app
from cardpipe import db as cardpipe_db
from cardpipe.db import PoolBudget
from cardpipe.routes.scan_fast_path import SCAN_THREADS
from cardpipe.settings import Settings
from models import TicketState
from tests.backing_services import in_ci
from tests.claims.conftest import Launch, drain
from tests.conftest import ADMIN_TOKEN, GATE_TOKEN
from tests.live_server import free_port
from tests.settings_env import environment
from tests.waiting import wait_until


def test_the_pool_follows_the_settings_or_the_process_threads() -> None:
    assert PoolBudget.from_settings(Settings(process_threads=4)) == PoolBudget(4, 8, 30.0, True)
    assert PoolBudget.from_settings(Settings()) == PoolBudget(10, 20, 30.0, True)
    explicit = Settings(db_pool_size=3, db_max_overflow=0, db_pool_timeout_s=5, db_transaction_pooler=True)
    assert PoolBudget.from_settings(explicit) == PoolBudget(3, 0, 5.0, False)


def test_an_api_process_runs_its_blocking_calls_on_the_threads_its_pool_covers() -> None:
    """``cardpipe api --threads`` sets both: the thread limiter (in the app's lifespan) and the
    pool, which keeps a connection for each of those threads and each gate-scan thread."""
    with environment(CARDPIPE_API_THREADS="7", CARDPIPE_PROCESS_THREADS=str(7 + SCAN_THREADS)):

        async def limiter_tokens() -> float:
            async with app_lifespan(create_app()):
                return to_thread.current_default_thread_limiter().total_tokens

        assert anyio.run(limiter_tokens) == 7
        assert PoolBudget.from_settings(Settings()).size == 7 + SCAN_THREADS


def test_the_engine_is_built_with_the_configured_pool(database_url: str) -> None:
    with environment(CARDPIPE_DB_POOL_SIZE="3", CARDPIPE_DB_MAX_OVERFLOW="1"):
        cardpipe_db.reset()
        try:
            pool = cardpipe_db.get_engine().pool
            assert isinstance(pool, QueuePool)
            assert (pool.size(), pool._max_overflow) == (3, 1)
        finally:
            cardpipe_db.reset()
    cardpipe_db.reset()


def test_a_connection_that_rested_is_pinged_and_replaced_when_its_server_side_went_away(database_url: str) -> None:
    engine = cardpipe_db.make_engine(database_url, PoolBudget(1, 0, 5.0))
    try:
        with engine.connect() as conn:
            first_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with engine.connect() as other:  # the pool's one connection, handed out again at once: no ping
            assert other.execute(text("SELECT pg_backend_pid()")).scalar_one() == first_pid
        killer = cardpipe_db.make_engine(database_url, PoolBudget(1, 0, 5.0))
        with killer.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first_pid})
        killer.dispose()
        time.sleep(cardpipe_db.PING_AFTER_IDLE_S + 0.1)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != first_pid
    finally:
        engine.dispose()


@pytest.fixture
def pgbouncer(database_url: str) -> Iterator[str]:
    """A PgBouncer in transaction mode in front of the test database; yields its URL."""
    binary = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
    if binary is None:
        message = "pgbouncer not installed (Debian package pgbouncer; .ci/run installs it)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    target = make_url(database_url)
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="cardpipe-pgbouncer-"))
    (workdir / "users.txt").write_text(f'"{target.username}" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={target.host or '127.0.0.1'} port={target.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {workdir / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 4\nmax_client_conn = 500\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
        f"logfile = {workdir / 'pgbouncer.log'}\n"
    )
    command = [binary]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        shutil.chown(workdir, "postgres")
        for path in workdir.iterdir():
            shutil.chown(path, "postgres")
        command += ["-u", "postgres"]
    process = subprocess.Popen([*command, str(workdir / "pgbouncer.ini")])
    try:
        url = target.set(port=port).render_as_string(hide_password=False)
        wait_until(lambda: process.poll() is None and _accepts(port), what="pgbouncer listening", timeout_s=20)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def _accepts(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_the_stack_works_behind_pgbouncer_in_transaction_mode(
    launch: Launch, pgbouncer: str, broker_worker: dramatiq.Worker
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    gate = {"Authorization": f"Bearer {GATE_TOKEN}"}
    with environment(DATABASE_URL=pgbouncer, CARDPIPE_DB_TRANSACTION_POOLER="true"):
        cardpipe_db.reset()
        try:
            assert cardpipe_db.get_engine().url.port == make_url(pgbouncer).port
            # Pre-issue (COPY), login, poll (serve), addCard, result and push (workers), many
            # times over: repeated statements would be prepared by now without the setting.
            buyers = [launch.buyer() for _ in range(6)]
            for buyer in buyers:
                launch.login(buyer)
                launch.post_result(buyer, launch.add_card(buyer, launch.ready_card_list(buyer)))
            drain(broker_worker)
            wait_until(lambda: all(launch.settled(b) for b in buyers), what="claims settled through pgbouncer")
            for n, buyer in enumerate(buyers):
                (ticket,) = launch.tickets(buyer)
                scan = {"code": ticket.code, "gate": "north", "nonce": f"bouncer-{n}-{uuid.uuid4().hex[:8]}"}
                answer = requests.post(f"{launch.api}/v1/redemptions", json=scan, headers=gate, timeout=10)
                assert answer.status_code == 200 and answer.json()["ok"], answer.text
            lines = "".join(f'{{"order_no": "PGB-{n}", "openid": "o-pgb-{n}", "ticket_count": 1}}\n' for n in range(20))
            imported = requests.post(
                f"{launch.api}/v1/admin/events/{launch.event_id}/orders",
                data=lines.encode(),
                headers={**admin, "Content-Type": "application/x-ndjson"},
                timeout=30,
            )
            assert imported.status_code == 200 and imported.json()["inserted"] == 20, imported.text
        finally:
            cardpipe_db.reset()
    cardpipe_db.reset()
    assert all(launch.tickets(b)[0].state == TicketState.REDEEMED for b in buyers)
