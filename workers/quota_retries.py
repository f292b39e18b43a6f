"""dramatiq's Retries, taught WeChat's quotas.

A message whose outbound call was refused for quota or rate reasons (45009 block, 45011 minute
quota, the per-account calls-per-second limit) did nothing wrong: it is re-enqueued for when the
account may call again (plus jitter), and the deferral does not count against ``max_retries``,
so nothing is dead-lettered while a quota is exhausted. Every other failure, including -1 and
transport errors that outlived ``WeChatHttp``'s own backoff, gets the ordinary exponential
backoff with jitter and counts.
"""

from __future__ import annotations

import time
from typing import Any

from dramatiq.broker import Broker
from dramatiq.message import Message
from dramatiq.middleware import Retries

from cardpipe.outbound import deferral_ms


class QuotaAwareRetries(Retries):
    def after_process_message(
        self, broker: Broker, message: Message[Any], *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        delay = None if exception is None else deferral_ms(exception)
        if delay is None:
            super().after_process_message(broker, message, result=result, exception=exception)
            return
        message.options["quota_deferrals"] = message.options.get("quota_deferrals", 0) + 1
        message.options["requeue_timestamp"] = int(time.time() * 1000)
        self.logger.info("Deferring message %r by %d ms: %s", message.message_id, delay, exception)
        broker.enqueue(message, delay=delay)
