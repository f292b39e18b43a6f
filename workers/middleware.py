"""Broker middleware of our own.

The Redis keys they write are named where they are read (``cardpipe.services.queues``): the core
never imports a worker module. Nothing imported here may import ``prometheus_client``: dramatiq's
Prometheus middleware must set its multiprocess directory before that module is first imported.
"""

from __future__ import annotations

import time
from typing import Any

from dramatiq import Middleware
from dramatiq.broker import Broker, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from redis import Redis

from cardpipe.services.queues import ACTOR_METRICS_KEY, WORKER_QUEUES_KEY, dead_letter_reasons_key

#: dramatiq's default dead_message_ttl: dead letters older than this are purged by the broker.
DEAD_LETTER_TTL_S = 7 * 24 * 3600


def as_redis_broker(broker: Broker) -> RedisBroker:
    """The broker a middleware of ours was added to: always the Redis broker."""
    if not isinstance(broker, RedisBroker):
        raise TypeError(f"cardpipe's middleware runs on a RedisBroker, not {type(broker).__name__}")
    return broker


def _redis(broker: Broker) -> Redis:
    return as_redis_broker(broker).client


class DeadLetterReasons(Middleware):
    """Keeps why a message was dead-lettered.

    The Redis broker's nack moves the payload as it was *stored*, so the traceback that the
    Retries middleware puts into the in-memory message never reaches the dead-letter queue for a
    message that fails without being retried first. This records it beside the DLQ, keyed by the
    broker's message id, for the ops monitor.
    """

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        redis_id = message.options.get("redis_message_id")
        traceback = str(message.options.get("traceback", "")).strip().splitlines()
        if not redis_id or not traceback:
            return
        client = _redis(broker)
        queue = message.queue_name.removesuffix(".DQ")
        key = dead_letter_reasons_key(as_redis_broker(broker).namespace, queue)
        pipe = client.pipeline(transaction=False)
        pipe.hset(key, redis_id, f"{traceback[-1]}\n{int(time.time())}")
        pipe.expire(key, DEAD_LETTER_TTL_S)
        pipe.execute()


class ActorMetrics(Middleware):
    """Counts processed and failed messages and their run time per actor, summed in one Redis
    hash across every worker process, so ``/metrics`` on the api can export them."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        self._started[message.message_id] = time.perf_counter()

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        started = self._started.pop(message.message_id, None)
        pipe = _redis(broker).pipeline(transaction=False)
        actor = message.actor_name
        pipe.hincrby(ACTOR_METRICS_KEY, f"{actor}|{'failed' if exception else 'processed'}", 1)
        if started is not None:
            pipe.hincrbyfloat(ACTOR_METRICS_KEY, f"{actor}|seconds", time.perf_counter() - started)
        pipe.execute()

    after_skip_message = after_process_message


class WorkerQueues(Middleware):
    """Records which queues each worker process consumes (broker id → comma-separated queues),
    so the queue monitor can tell a queue that no live worker serves. Liveness itself comes
    from the broker's heartbeats; a killed process's entry is dropped by the ops sampler."""

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        queues = sorted(q for q in worker.consumers if not q.endswith(".DQ"))
        redis_broker = as_redis_broker(broker)
        redis_broker.client.hset(WORKER_QUEUES_KEY, redis_broker.broker_id, ",".join(queues))

    def after_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        redis_broker = as_redis_broker(broker)
        redis_broker.client.hdel(WORKER_QUEUES_KEY, redis_broker.broker_id)
