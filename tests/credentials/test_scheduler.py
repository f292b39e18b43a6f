"""The scheduler: one leader among real ``cardpipe scheduler`` processes, a takeover within the
lease after ``kill -9``, a leader that loses its lease steps down (and leads again once the lease
is free), and no job window is ever sent twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis

from cardpipe.redis_values import as_text
from scheduler import LEASE_KEY, Job, send_once
from tests.waiting import wait_until
from workers.broker import broker
from workers.credentials import refresh_all_credentials

LEASE_S = 2.0
RENEW_S = 0.5


#: Starts one more scheduler process (stopped when the test ends).
StartScheduler = Callable[[], subprocess.Popen[bytes]]


@pytest.fixture
def start_scheduler(
    redis_url: str, engine: object, subprocess_env: dict[str, str], tmp_path: Path
) -> Iterator[StartScheduler]:
    env = {
        **subprocess_env,
        "CARDPIPE_SCHEDULER_LEASE_S": str(LEASE_S),
        "CARDPIPE_SCHEDULER_RENEW_S": str(RENEW_S),
        "CARDPIPE_SCHEDULER_REFRESH_EVERY_S": "1",
        "CARDPIPE_SCHEDULER_RESIGN_EVERY_S": "1",
        "CARDPIPE_SCHEDULER_RECONCILE_EVERY_S": "1",
    }
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        log = (tmp_path / f"scheduler-{len(started)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "cardpipe", "scheduler"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def _holder(redis: Redis) -> int | None:
    """The pid of the scheduler holding the lease (its identity is host:pid:nonce)."""
    value = redis.get(LEASE_KEY)
    return int(as_text(value).split(":")[1]) if value else None


def _sent_windows() -> Counter[str]:
    """``job@window`` of every message the schedulers sent (nothing consumes them here)."""
    runs: Counter[str] = Counter()
    for queue in ("maintenance", "wechat"):
        for raw in broker.client.hvals(f"dramatiq:{queue}.msgs"):
            run = json.loads(raw)["options"].get("scheduler_run")
            if run:
                runs[run] += 1
    return runs


def test_one_leads_a_standby_takes_over_within_the_lease_and_no_window_is_sent_twice(
    start_scheduler: StartScheduler,
) -> None:
    redis = broker.client
    first, second = start_scheduler(), start_scheduler()
    pids = {first.pid: first, second.pid: second}
    leader_pid = wait_until(lambda: _holder(redis) if _holder(redis) in pids else None, what="a leader", timeout_s=20)
    assert leader_pid is not None
    leader = pids[leader_pid]
    standby = first if leader is second else second
    wait_until(lambda: len(_sent_windows()) >= 12, what="the leader's sends")
    assert _holder(redis) == leader_pid and standby.poll() is None

    leader.send_signal(signal.SIGKILL)
    leader.wait()
    killed_at = time.monotonic()
    wait_until(lambda: _holder(redis) == standby.pid, what="the standby leading", timeout_s=LEASE_S + 5)
    takeover_s = time.monotonic() - killed_at
    assert takeover_s <= LEASE_S + RENEW_S + 1.0, takeover_s
    sent_before = sum(_sent_windows().values())
    wait_until(lambda: sum(_sent_windows().values()) >= sent_before + 6, what="the new leader's sends")

    standby.send_signal(signal.SIGTERM)
    assert standby.wait(timeout=10) == 0
    assert redis.get(LEASE_KEY) is None  # a stopping leader hands the lease back

    runs = _sent_windows()
    assert runs and max(runs.values()) == 1, [run for run, n in runs.items() if n > 1]
    jobs = {run.split("@")[0] for run in runs}
    assert jobs == {
        "refresh-credentials",
        "resign-stale-tickets",
        "requeue-missing-tickets",
        "requeue-stale-inbox",
        "resync-redemptions",
        "confirm-client-claims",
    }


def test_a_leader_whose_lease_was_taken_steps_down_and_leads_again_once_it_is_free(
    start_scheduler: StartScheduler,
) -> None:
    redis = broker.client
    leader = start_scheduler()
    wait_until(lambda: _holder(redis) == leader.pid, what="leading", timeout_s=20)
    redis.set(LEASE_KEY, "elsewhere:1:stolen", px=3_000)
    wait_until(lambda: _holder(redis) == leader.pid, what="leading again after the other lease ran out", timeout_s=10)
    assert leader.poll() is None


def test_a_window_is_sent_once_whoever_asks(redis_url: str) -> None:
    redis = broker.client
    job = Job("refresh-credentials", refresh_all_credentials, 60)
    assert send_once(redis, job, identity="a", clock=lambda: 600.0)
    assert not send_once(redis, job, identity="b", clock=lambda: 659.0)
    assert send_once(redis, job, identity="b", clock=lambda: 660.0)
    assert _sent_windows() == Counter({"refresh-credentials@10": 1, "refresh-credentials@11": 1})
