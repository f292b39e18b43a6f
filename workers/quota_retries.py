"""dramatiq's Retries, taught WeChat's quotas and outages of our own services.

A message whose outbound call was refused for quota or rate reasons (45009 block, 45011 minute
quota, the per-account calls-per-second limit) did nothing wrong: it is re-enqueued for when the
account may call again (plus jitter), and the deferral does not count against ``max_retries``,
so nothing is dead-lettered while a quota is exhausted. A message that failed because PostgreSQL
or Redis could not be reached did nothing wrong either: it comes back after
``OUTAGE_DEFERRAL_MS`` (plus jitter), uncounted, so it is done within seconds of the service's
return and never dead-lettered by an outage. Every other failure, including -1 and transport
errors that outlived ``WeChatHttp``'s own backoff, gets the ordinary exponential backoff with
jitter and counts.

The follow-up (retry or deferral) is recorded before the message is acked: if Redis refuses the
re-enqueue, it is tried again until Redis takes it (the ack waits for Redis in the same way), so
a retry never vanishes while the original is acked.
"""

from __future__ import annotations

import random
import time
from typing import Any

from dramatiq.broker import Broker, MessageProxy
from dramatiq.message import Message
from dramatiq.middleware import Retries
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, OperationalError

from cardpipe.outbound import deferral_ms

#: A message that failed on an unreachable PostgreSQL or Redis comes back after about this long.
OUTAGE_DEFERRAL_MS = 1_000
#: Pauses between attempts to record a follow-up while Redis is away.
RECORD_RETRY_MIN_S = 0.2
RECORD_RETRY_MAX_S = 2.0


def outage_deferral_ms(exc: BaseException) -> int | None:
    """How long to defer a message that failed because our own database or Redis was away."""
    unreachable = isinstance(exc, OperationalError | RedisConnectionError | RedisTimeoutError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )
    return int(OUTAGE_DEFERRAL_MS * (1 + random.random() / 2)) if unreachable else None


class _RecordingBroker:
    """The broker, whose ``enqueue`` does not return before Redis took the message."""

    def __init__(self, broker: Broker, logger: Any) -> None:
        self._broker = broker
        self._logger = logger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        pause = RECORD_RETRY_MIN_S
        while True:
            try:
                return self._broker.enqueue(message, delay=delay)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                self._logger.warning("Redis refused the retry of %r (%s); trying again", message.message_id, exc)
                time.sleep(pause)
                pause = min(RECORD_RETRY_MAX_S, pause * 2)


class QuotaAwareRetries(Retries):
    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        recording = _RecordingBroker(broker, self.logger)
        delay = None
        if exception is not None:
            delay = deferral_ms(exception)
            if delay is None:
                delay = outage_deferral_ms(exception) or outage_deferral_ms(exception.__context__ or exception)
        if delay is None:
            super().after_process_message(  # type: ignore[no-untyped-call]  # dramatiq's Retries hook is unannotated
                recording, message, result=result, exception=exception
            )
            return
        message.options["quota_deferrals"] = message.options.get("quota_deferrals", 0) + 1
        message.options["requeue_timestamp"] = int(time.time() * 1000)
        self.logger.info("Deferring message %r by %d ms: %s", message.message_id, delay, exception)
        recording.enqueue(message.copy(), delay=delay)
