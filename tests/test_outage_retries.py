"""Retries around outages of our own services: a retry is recorded in Redis before the message
is acked, however long Redis refuses it, and a message that failed because PostgreSQL or Redis
was unreachable comes back within seconds without counting against its retries."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.message import Message
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError

from workers.quota_retries import OUTAGE_DEFERRAL_MS, QuotaAwareRetries


class RefusingBroker(StubBroker):
    """A stub broker whose first ``refusals`` enqueues fail as if Redis were away."""

    def __init__(self, refusals: int) -> None:
        super().__init__(middleware=[QuotaAwareRetries()])
        self.refusals = refusals
        self.enqueued: list[tuple[Message[Any], int | None]] = []

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        if self.refusals:
            self.refusals -= 1
            raise RedisConnectionError("Connection refused")
        self.enqueued.append((message, delay))
        return message


def _message(broker: RefusingBroker) -> Message[Any]:
    @dramatiq.actor(broker=broker, max_retries=3, min_backoff=10, max_backoff=20)
    def flaky() -> None: ...

    return flaky.message()


def test_a_retry_redis_refuses_is_tried_again_until_it_is_recorded() -> None:
    broker = RefusingBroker(refusals=3)
    message = _message(broker)
    QuotaAwareRetries().after_process_message(broker, MessageProxy(message), exception=ValueError("boom"))
    assert len(broker.enqueued) == 1 and broker.refusals == 0
    assert message.options["retries"] == 1


def test_a_message_failed_by_an_unreachable_database_is_deferred_uncounted() -> None:
    broker = RefusingBroker(refusals=0)
    message = _message(broker)
    failure = OperationalError("SELECT 1", {}, Exception("connection refused"))
    QuotaAwareRetries().after_process_message(broker, MessageProxy(message), exception=failure)
    [(_, delay)] = broker.enqueued
    assert delay is not None and OUTAGE_DEFERRAL_MS <= delay <= OUTAGE_DEFERRAL_MS * 1.5
    assert "retries" not in message.options and message.options["quota_deferrals"] == 1
