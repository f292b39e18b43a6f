"""The scheduler (``cardpipe scheduler``): one leader at a time; its jobs only enqueue (and take the
ops charts' per-minute sample, which only reads).

Any number of instances may run. Each waits for a Redis lease (``SET NX PX``, through redis-py's
``Lock`` with the instance's identity as token); the holder leads and renews it every
``scheduler_renew_s``. A standby takes over within ``scheduler_lease_s`` of the leader's death.

A Redis blip does not end a leader: while Redis does not answer, it keeps trying to renew (its
jobs could not send anything anyway). When Redis answers again it renews the lease if it is still
its own, takes it again if it is free (Redis came back empty, or the lease ran out), and steps
down to standby (no exit, no supervisor needed) if another instance took it. A leader that has
not renewed for a whole lease runs no job until it has, so two instances never both believe
they lead a job window.

A lease is not a fence (a paused leader may not know it lost it), so each job also claims its
time window with ``SET NX`` before it sends: two leaders in the same window send once. And every
message it sends is idempotent, so even a message sent twice changes state once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from apscheduler.schedulers.blocking import BlockingScheduler
from dramatiq import Actor
from redis import Redis
from redis.exceptions import LockError, RedisError

from cardpipe import clock
from cardpipe.db import session_scope
from cardpipe.runtime import redis_client
from cardpipe.services.ops_history import sample_minute
from cardpipe.services.queues import QueueMonitor
from cardpipe.services.readiness.signals import LEADER_LEASE_KEY
from cardpipe.settings import Settings, get_settings
from workers.broker import broker
from workers.confirmations import confirm_client_claims
from workers.credentials import refresh_all_credentials
from workers.inbox import requeue_stale_inbox
from workers.preissue import requeue_missing_tickets
from workers.redemptions import resync_redemptions
from workers.resign import resign_all_stale

log = logging.getLogger("cardpipe.scheduler")

#: The leader lease, named beside the checks that read it.
LEASE_KEY = LEADER_LEASE_KEY


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

    def __init__(self, redis: Redis, *, ttl_s: float, poll_s: float, clock: Callable[[], float] = time.monotonic):
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.ttl_s = ttl_s
        self._poll_s = poll_s
        self._clock = clock
        self._lock = redis.lock(LEASE_KEY, timeout=ttl_s, sleep=poll_s, thread_local=False)
        self._renewed_at = -float("inf")

    def wait(self, stopping: threading.Event) -> bool:
        """Block until this instance holds the lease (True) or ``stopping`` is set (False)."""
        while not stopping.is_set():
            try:
                if self._lock.acquire(blocking=False, token=self.identity):
                    self._renewed_at = self._clock()
                    return True
            except RedisError as exc:
                log.warning("scheduler %s cannot reach Redis to wait for the lease: %s", self.identity, exc)
            stopping.wait(self._poll_s)
        return False

    def keep(self) -> bool:
        """Renew the lease, or take it again if it is free; False if another instance holds it.
        Raises ``RedisError`` while Redis does not answer."""
        try:
            if self._lock.owned():
                self._lock.reacquire()
                self._renewed_at = self._clock()
                return True
        except LockError:
            pass  # expired between the check and the renewal: try to take it like anyone else
        if self._lock.acquire(blocking=False, token=self.identity):
            self._renewed_at = self._clock()
            return True
        return False

    @property
    def current(self) -> bool:
        """Renewed within the lease: no other instance can have taken it since."""
        return self._clock() - self._renewed_at < self.ttl_s

    def release(self) -> None:
        try:
            if self._lock.owned():
                self._lock.release()
        except (LockError, RedisError) as exc:
            log.warning("scheduler %s could not hand back the lease: %s", self.identity, exc)


def send_once(redis: Redis, job: Job, *, identity: str, clock: Callable[[], float] = time.time) -> bool:
    """Send ``job``'s message unless this time window's message was already sent."""
    window = int(clock() // job.every_s)
    claim = f"cardpipe:scheduler:sent:{job.name}:{window}"
    if not redis.set(claim, identity, nx=True, px=max(1, int(job.every_s * 2000))):
        return False
    job.actor.send_with_options(scheduler_run=f"{job.name}@{window}")
    return True


def _send_while_leading(lease: Lease, redis: Redis, job: Job) -> None:
    if not lease.current:
        log.info("scheduler %s skips %s: its lease is not confirmed", lease.identity, job.name)
        return
    try:
        send_once(redis, job, identity=lease.identity)
    except RedisError as exc:
        log.warning("scheduler %s could not send %s: %s", lease.identity, job.name, exc)


def _sample_while_leading(lease: Lease, redis: Redis, monitor: QueueMonitor) -> None:
    if not lease.current:
        log.info("scheduler %s skips the ops sample: its lease is not confirmed", lease.identity)
        return
    try:
        sample_minute(session_scope, redis, monitor)
    except RedisError as exc:
        log.warning("scheduler %s could not take the ops sample: %s", lease.identity, exc)


def lead(settings: Settings, redis: Redis, lease: Lease, stopping: threading.Event) -> bool:
    """Run the jobs while this instance holds the lease; True if it stepped down (another
    instance leads), False if it was asked to stop."""
    # APScheduler logs every run at INFO: a line per job per second or so.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    scheduler = BlockingScheduler(
        timezone="UTC",
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
    )
    stepped_down = False
    unreachable = False

    def renew() -> None:
        nonlocal stepped_down, unreachable
        try:
            held = lease.keep()
        except RedisError as exc:
            if not unreachable:
                log.warning("scheduler %s cannot reach Redis to renew its lease; still trying: %s", lease.identity, exc)
            unreachable = True
            return
        if unreachable:
            log.info("scheduler %s reached Redis again and %s", lease.identity, "leads" if held else "steps down")
        unreachable = False
        if not held:
            stepped_down = True
            log.warning("scheduler %s: another instance holds the lease; stepping down", lease.identity)
            scheduler.shutdown(wait=False)

    scheduler.add_job(renew, "interval", seconds=settings.scheduler_renew_s, id="renew-lease", name="renew-lease")
    for job in jobs(settings):
        scheduler.add_job(
            _send_while_leading,
            "interval",
            seconds=job.every_s,
            id=job.name,
            name=job.name,
            args=(lease, redis, job),
            next_run_time=clock.now(),
        )
    # The ops charts' per-minute sample is taken here, not queued: it must not wait behind the
    # backlog it measures. It only reads, and stores each minute once (a new leader at once).
    scheduler.add_job(
        _sample_while_leading,
        "cron",
        second=1,
        id="ops-sample",
        name="ops-sample",
        args=(lease, redis, QueueMonitor(broker)),
        next_run_time=clock.now(),
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    scheduler.start()
    return stepped_down and not stopping.is_set()


def run(settings: Settings | None = None) -> int:
    """Lead whenever this instance holds the lease, stand by otherwise, until stopped (0)."""
    settings = settings or get_settings()
    redis = redis_client()
    lease = Lease(redis, ttl_s=settings.scheduler_lease_s, poll_s=min(1.0, settings.scheduler_renew_s))
    stopping = threading.Event()
    while not stopping.is_set():
        signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
        signal.signal(signal.SIGINT, lambda signum, frame: stopping.set())
        log.info("scheduler %s waiting for the lease", lease.identity)
        if not lease.wait(stopping):
            break
        log.info("scheduler %s leads", lease.identity)
        if not lead(settings, redis, lease, stopping):
            break
    lease.release()
    log.info("scheduler %s stopped", lease.identity)
    return 0


def main() -> None:
    raise SystemExit(run())


if __name__ == "__main__":
    main()
