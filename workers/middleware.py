"""Broker middleware of our own."""

from __future__ import annotations

import time
from typing import Any

from dramatiq import Middleware
from dramatiq.broker import Broker
from dramatiq.message import Message

#: dramatiq's default dead_message_ttl: dead letters older than this are purged by the broker.
DEAD_LETTER_TTL_S = 7 * 24 * 3600


def dead_letter_reasons_key(namespace: str, queue: str) -> str:
    return f"cardpipe:dead-letter-reasons:{namespace}:{queue}"


class DeadLetterReasons(Middleware):
    """Keeps why a message was dead-lettered.

    The Redis broker's nack moves the payload as it was *stored*, so the traceback that the
    Retries middleware puts into the in-memory message never reaches the dead-letter queue for a
    message that fails without being retried first. This records it beside the DLQ, keyed by the
    broker's message id, for the ops monitor.
    """

    def after_nack(self, broker: Broker, message: Message[Any]) -> None:
        redis_id = message.options.get("redis_message_id")
        traceback = str(message.options.get("traceback", "")).strip().splitlines()
        if not redis_id or not traceback:
            return
        client = broker.client  # type: ignore[attr-defined]
        queue = message.queue_name.removesuffix(".DQ")
        key = dead_letter_reasons_key(broker.namespace, queue)  # type: ignore[attr-defined]
        pipe = client.pipeline(transaction=False)
        pipe.hset(key, redis_id, f"{traceback[-1]}\n{int(time.time())}")
        pipe.expire(key, DEAD_LETTER_TTL_S)
        pipe.execute()
