"""``WorkerPresence``: each worker process announces, every few seconds, which queues it consumes,
so the readiness check can tell a queue nobody consumes. dramatiq's own heartbeats do not say
which queues a process serves (api and scheduler processes beat too).

The announcement is one Redis SET with a short expiry from a daemon thread: a killed process
disappears by itself within a minute, and nothing is written per message.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from dramatiq import Middleware
from dramatiq.broker import Broker
from redis import RedisError

from cardpipe.services.readiness.signals import PRESENCE_EVERY_S, announce_worker

log = logging.getLogger(__name__)


class WorkerPresence(Middleware):
    def __init__(self) -> None:
        #: One stop signal per booted worker (tests boot several in one process).
        self._stops: dict[int, threading.Event] = {}

    def after_worker_boot(self, broker: Broker, worker: Any) -> None:
        queues = sorted(worker.consumer_whitelist or broker.get_declared_queues())
        queues = [q for q in queues if not q.endswith((".DQ", ".XQ"))]
        process_id = f"{socket.gethostname()}:{os.getpid()}:{id(worker):x}"
        client = broker.client  # type: ignore[attr-defined]
        stop = self._stops[id(worker)] = threading.Event()

        def announce() -> None:
            while True:
                try:
                    announce_worker(client, process_id, queues)
                except RedisError as exc:
                    log.warning("worker presence not announced: %s", exc)
                if stop.wait(PRESENCE_EVERY_S):
                    return

        threading.Thread(target=announce, name="worker-presence", daemon=True).start()

    def before_worker_shutdown(self, broker: Broker, worker: Any) -> None:
        stop = self._stops.pop(id(worker), None)
        if stop is not None:
            stop.set()
