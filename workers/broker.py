"""The dramatiq broker every actor binds to, chosen from settings at import time.

Queues keep bulk work from starving latency-sensitive work: ``preissue`` (bulk), ``claims``,
``events``, ``wechat`` (outbound, rate-limited) and ``maintenance``.

Heartbeat timeout and maintenance chance (settings ``CARDPIPE_BROKER_HEARTBEAT_TIMEOUT_MS``,
``CARDPIPE_BROKER_MAINTENANCE_CHANCE``) are tuned for a small deployment: a killed worker's
messages come back after ~15 s instead of after a random, possibly hours-long wait (dramatiq #527).
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Retries, default_middleware

from cardpipe.settings import get_settings
from workers.middleware import ActorMetrics, DeadLetterReasons, WorkerQueues
from workers.outbox import OutboxRelay
from workers.quota_retries import QuotaAwareRetries

QUEUES = ("preissue", "claims", "events", "wechat", "maintenance")


def build_broker(redis_url: str) -> RedisBroker:
    settings = get_settings()
    broker = RedisBroker(
        url=redis_url,
        heartbeat_timeout=settings.broker_heartbeat_timeout_ms,
        maintenance_chance=settings.broker_maintenance_chance,
        middleware=[QuotaAwareRetries() if m is Retries else m() for m in default_middleware],
    )
    broker.add_middleware(CurrentMessage())
    broker.add_middleware(DeadLetterReasons())
    broker.add_middleware(ActorMetrics())
    broker.add_middleware(WorkerQueues())
    if settings.worker_metrics:
        # Imported on use: the module creates its multiprocess directory when imported.
        from dramatiq.middleware.prometheus import Prometheus

        broker.add_middleware(Prometheus())
    broker.add_middleware(OutboxRelay())
    for queue in QUEUES:
        broker.declare_queue(queue)
    return broker


broker = build_broker(get_settings().redis_url)
dramatiq.set_broker(broker)
