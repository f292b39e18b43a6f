"""The queue monitor reads the broker's Redis keys: depths, dead letters, requeue and purge."""

from __future__ import annotations

import time
from collections.abc import Callable

import dramatiq
import pytest

from cardpipe.services.queues import QueueMonitor
from workers.broker import broker

QUEUE = "maintenance"
attempts: list[int] = []


@dramatiq.actor(queue_name=QUEUE, max_retries=0, actor_name="tests_ops_fails_until_fixed")
def fails_until_fixed(value: int) -> None:
    attempts.append(value)
    if value < 0:
        raise ValueError(f"negative value {value}")


@pytest.fixture
def monitor(redis_url: str) -> QueueMonitor:
    broker.flush_all()
    attempts.clear()
    return QueueMonitor(broker)


def _wait(condition: Callable[[], object], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_ready_and_delayed_depths_and_oldest_age(monitor: QueueMonitor) -> None:
    fails_until_fixed.send(1)
    fails_until_fixed.send(2)
    fails_until_fixed.send_with_options(args=(3,), delay=60_000)
    stats = {q.name: q for q in monitor.queues()}[QUEUE]
    assert (stats.ready, stats.delayed, stats.dead) == (2, 1, 0)
    assert stats.oldest_ready_age_s is not None and stats.oldest_ready_age_s >= 0


def test_dead_letter_is_listed_then_requeued_once_and_processed(monitor: QueueMonitor) -> None:
    worker = dramatiq.Worker(broker, queues={QUEUE}, worker_timeout=100, worker_threads=1)
    worker.start()
    try:
        fails_until_fixed.send(-5)
        _wait(lambda: monitor.dead_letters(QUEUE))
        (letter,) = monitor.dead_letters(QUEUE)
        assert letter.actor == "tests_ops_fails_until_fixed" and letter.args == [-5]
        assert "ValueError: negative value -5" in letter.error
        assert {q.name: q for q in monitor.queues()}[QUEUE].dead == 1
        assert any(w.age_s < 5 for w in monitor.workers())

        assert monitor.requeue(QUEUE, letter.redis_id) is True
        assert monitor.requeue(QUEUE, letter.redis_id) is False
        _wait(lambda: attempts.count(-5) == 2 and monitor.dead_letters(QUEUE))
    finally:
        worker.stop()
    assert monitor.purge(QUEUE) == 1
    assert monitor.dead_letters(QUEUE) == []


def test_a_queue_counts_the_live_workers_that_consume_it(monitor: QueueMonitor) -> None:
    assert monitor.live_consumers() == dict.fromkeys(monitor.queue_names(), 0)
    worker = dramatiq.Worker(broker, queues={QUEUE}, worker_timeout=100, worker_threads=1)
    worker.start()
    try:
        _wait(lambda: monitor.live_consumers()[QUEUE] == 1)
        assert monitor.live_consumers()["claims"] == 0
        # A worker that died without shutting down leaves its entry, which the sampler drops
        # once its heartbeat is gone; a stale heartbeat does not count as live meanwhile.
        assert monitor.forget_departed_workers() == 0
        assert monitor.live_consumers(max_age_s=-1)[QUEUE] == 0
    finally:
        worker.stop()
    assert monitor.live_consumers()[QUEUE] == 0
    broker.client.hset("cardpipe:worker-queues", "killed-process", QUEUE)
    assert monitor.forget_departed_workers() == 1
