"""A worker process killed with SIGKILL in the middle of a 200,000-ticket pre-issue: after a
restart the event completes with exactly one ticket per (order, seq) and no duplicate code.

The workers are real ``dramatiq`` processes on the test Redis and database. The broker's
heartbeat timeout is lowered (settings) so the killed process's unacked chunks come back in
seconds, not 15 s.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from sqlalchemy import func, select

from cardpipe.db import session_scope
from cardpipe.runtime import credential_store
from cardpipe.services.preissue import tracking
from models import EventState, Order, Ticket
from tests.preissue.conftest import Organiser

ROOT = Path(__file__).resolve().parents[2]
ORDERS = 200_000
WORKER_ENV = {
    "CARDPIPE_BROKER_HEARTBEAT_TIMEOUT_MS": "3000",
    "CARDPIPE_BROKER_MAINTENANCE_CHANCE": "1000000",
    "CARDPIPE_PREISSUE_CHUNK_TICKETS": "2000",
}

StartWorkers = Callable[[str], subprocess.Popen[bytes]]


@pytest.fixture
def start_workers(tmp_path: Path) -> Iterator[StartWorkers]:
    """``dramatiq workers`` (2 processes × 2 threads, queue ``preissue``) as a subprocess."""
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        log_path = tmp_path / f"{name}.log"
        command = [
            sys.executable, "-m", "dramatiq", "workers",
            "--processes", "2", "--threads", "2", "--queues", "preissue",
        ]  # fmt: skip
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, **WORKER_ENV},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(process)
        deadline = time.monotonic() + 60
        while log_path.read_text(errors="replace").count("ready for action") < 2:
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.1)
        return process

    yield start
    for process in started:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM lets dramatiq stop its worker processes; anything left of the process group (its own
    session) is killed, so no orphaned worker outlives the test and eats a later test's messages."""
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _progress(event_id: int) -> tracking.Progress:
    with session_scope() as session:
        return tracking.preissue_progress(session, event_id, by_state=False)


def _wait(event_id: int, done: Callable[[tracking.Progress], bool], timeout_s: float) -> tracking.Progress:
    deadline = time.monotonic() + timeout_s
    while True:
        progress = _progress(event_id)
        if done(progress):
            return progress
        assert time.monotonic() < deadline, f"not reached in {timeout_s}s: {progress}"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_worker_killed_mid_preissue_leaves_exactly_one_ticket_per_order_seat(
    organiser: Organiser, start_workers: StartWorkers
) -> None:
    from workers.broker import broker
    from workers.preissue import plan_preissue

    # Given 200,000 orders and two worker processes
    event_id = organiser.create_event()
    organiser.import_orders(event_id, ORDERS)
    credential_store().card_ticket(organiser.world.oa_appid)
    broker.flush_all()
    workers = start_workers("first")

    # When pre-issue runs and one worker process is killed with SIGKILL part-way
    with session_scope() as session:
        tracking.start_preissue(session, event_id)
    plan_preissue.send(event_id)
    _wait(event_id, lambda p: p.tickets_issued >= 30_000, timeout_s=120)
    victim = psutil.Process(workers.pid).children()[0]
    os.kill(victim.pid, signal.SIGKILL)
    workers.wait(timeout=60)  # dramatiq stops the other process when one dies
    at_kill = _progress(event_id).tickets_issued
    assert at_kill < ORDERS, "the kill came too late to interrupt anything"

    # And the workers are restarted
    start_workers("restarted")

    # Then the event completes
    final = _wait(event_id, lambda p: p.state == EventState.ISSUED, timeout_s=180)
    assert (final.orders_complete, final.tickets_issued) == (ORDERS, ORDERS)
    with session_scope() as session:
        tickets, pairs, codes = session.execute(
            select(
                func.count(),
                func.count(func.distinct(func.concat(Ticket.order_id, ":", Ticket.seq))),
                func.count(func.distinct(Ticket.code)),
            ).where(Ticket.event_id == event_id)
        ).one()
        wanted = session.scalar(select(func.sum(Order.ticket_count)).where(Order.event_id == event_id))
        missing = tracking.orders_missing_tickets(session, event_id, 10)
    assert tickets == pairs == codes == wanted == ORDERS
    assert missing == []
