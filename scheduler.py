"""The scheduler (``cardpipe scheduler``): one leader at a time; its jobs only enqueue (and take the
ops charts' per-minute sample, which only reads).

Any number of instances may run. Each waits for a Redis lease (``SET NX PX``, through redis-py's
``Lock`` with the instance's identity as token); the holder leads and renews it every
``scheduler_renew_s`` from an interval job. A leader that cannot renew (the lease expired, was
taken, or Redis is unreachable) stops scheduling and exits non-zero so its supervisor restarts
it as a standby; a standby takes over within ``scheduler_lease_s`` of the leader's death.

A lease is not a fence (a paused leader may not know it lost it), so each job also claims its
time window with ``SET NX`` before it sends: two leaders in the same window send once. And every
message it sends is idempotent, so even a message sent twice changes state once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from apscheduler.schedulers.blocking import BlockingScheduler
from dramatiq import Actor
from redis import Redis

from cardpipe.db import session_scope
from cardpipe.runtime import redis_client
from cardpipe.services.ops_history import sample_minute
from cardpipe.services.queues import QueueMonitor
from cardpipe.settings import Settings, get_settings
from workers.broker import broker
from workers.credentials import (
    confirm_client_claims,
    refresh_all_credentials,
    requeue_missing_tickets,
    resign_all_stale,
)
from workers.inbox import requeue_stale_inbox
from workers.redemptions import resync_redemptions

log = logging.getLogger("cardpipe.scheduler")

LEASE_KEY = "cardpipe:scheduler:leader"
#: Exit status of a leader that lost its lease.
EXIT_LEASE_LOST = 3


@dataclass(frozen=True)
class Job:
    name: str
    actor: Actor[..., Any]
    every_s: float


def jobs(settings: Settings) -> list[Job]:
    """What the leader enqueues, and how often."""
    reconcile = settings.scheduler_reconcile_every_s
    return [
        Job("refresh-credentials", refresh_all_credentials, settings.scheduler_refresh_every_s),
        Job("resign-stale-tickets", resign_all_stale, settings.scheduler_resign_every_s),
        Job("requeue-missing-tickets", requeue_missing_tickets, reconcile),
        Job("requeue-stale-inbox", requeue_stale_inbox, reconcile),
        Job("resync-redemptions", resync_redemptions, reconcile),
        Job("confirm-client-claims", confirm_client_claims, reconcile),
    ]


class Lease:
    """The leader lease. ``identity`` is stored as its value, so ops can see who leads."""

    def __init__(self, redis: Redis, *, ttl_s: float, poll_s: float) -> None:
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lock = redis.lock(LEASE_KEY, timeout=ttl_s, sleep=poll_s, thread_local=False)

    def wait(self) -> None:
        """Block until this instance holds the lease."""
        self._lock.acquire(blocking=True, token=self.identity)

    def renew(self) -> None:
        """Reset the lease to its full length; raises if it is no longer ours."""
        self._lock.reacquire()

    def release(self) -> None:
        if self._lock.owned():
            self._lock.release()


def send_once(redis: Redis, job: Job, *, identity: str, clock: Callable[[], float] = time.time) -> bool:
    """Send ``job``'s message unless this time window's message was already sent."""
    window = int(clock() // job.every_s)
    claim = f"cardpipe:scheduler:sent:{job.name}:{window}"
    if not redis.set(claim, identity, nx=True, px=max(1, int(job.every_s * 2000))):
        return False
    job.actor.send_with_options(scheduler_run=f"{job.name}@{window}")
    return True


def run(settings: Settings | None = None) -> int:
    """Wait for the lease, then schedule until stopped (0) or the lease is lost (non-zero)."""
    settings = settings or get_settings()
    redis = redis_client()
    lease = Lease(redis, ttl_s=settings.scheduler_lease_s, poll_s=min(1.0, settings.scheduler_renew_s))
    log.info("scheduler %s waiting for the lease", lease.identity)
    lease.wait()
    log.info("scheduler %s leads", lease.identity)

    # APScheduler logs every run at INFO: a line per job per second or so.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    scheduler = BlockingScheduler(
        timezone="UTC",
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
    )
    lost = False

    def renew() -> None:
        nonlocal lost
        try:
            lease.renew()
        except Exception:
            lost = True
            log.exception("scheduler %s could not renew its lease; stopping", lease.identity)
            scheduler.shutdown(wait=False)

    def stop(signum: int, frame: FrameType | None) -> None:
        scheduler.shutdown(wait=False)

    scheduler.add_job(renew, "interval", seconds=settings.scheduler_renew_s, id="renew-lease", name="renew-lease")
    for job in jobs(settings):
        scheduler.add_job(
            send_once,
            "interval",
            seconds=job.every_s,
            id=job.name,
            name=job.name,
            args=(redis, job),
            kwargs={"identity": lease.identity},
            next_run_time=datetime.now(UTC),
        )
    # The ops charts' per-minute sample is taken here, not queued: it must not wait behind the
    # backlog it measures. It only reads, and stores each minute once (a new leader at once).
    scheduler.add_job(
        sample_minute,
        "cron",
        second=1,
        id="ops-sample",
        name="ops-sample",
        args=(session_scope, redis, QueueMonitor(broker)),
        next_run_time=datetime.now(UTC),
    )
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    scheduler.start()
    if lost:
        return EXIT_LEASE_LOST
    lease.release()
    log.info("scheduler %s stopped", lease.identity)
    return 0


def main() -> None:
    raise SystemExit(run())


if __name__ == "__main__":
    main()
