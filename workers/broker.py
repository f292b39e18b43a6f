"""The dramatiq broker every actor binds to, chosen from settings at import time.

Queues keep bulk work from starving latency-sensitive work: ``preissue`` (bulk), ``claims``,
``events``, ``wechat`` (outbound, rate-limited) and ``maintenance``.

Heartbeat timeout and maintenance chance are tuned for a small deployment: a killed worker's
messages come back after ~15 s instead of after a random, possibly hours-long wait (dramatiq #527).
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

from cardpipe.settings import get_settings
from workers.middleware import ActorMetrics, DeadLetterReasons

QUEUES = ("preissue", "claims", "events", "wechat", "maintenance")
HEARTBEAT_TIMEOUT_MS = 15_000
MAINTENANCE_CHANCE = 50_000


def build_broker(redis_url: str) -> RedisBroker:
    broker = RedisBroker(
        url=redis_url,
        heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
        maintenance_chance=MAINTENANCE_CHANCE,
    )
    broker.add_middleware(CurrentMessage())
    broker.add_middleware(DeadLetterReasons())
    broker.add_middleware(ActorMetrics())
    for queue in QUEUES:
        broker.declare_queue(queue)
    return broker


broker = build_broker(get_settings().redis_url)
dramatiq.set_broker(broker)
