"""The push drain: every worker process that serves the ``events`` queue applies the stored
WeChat pushes in batches, straight from the inbox.

A push's inbox row is its own work item: the api commits the row and nothing else, and a drain
thread takes up to ``BATCH`` unprocessed rows with ``FOR UPDATE SKIP LOCKED`` (drains in several
processes share the work), applies them and marks them processed in one transaction
(:func:`cardpipe.services.push_effects.apply_pending`), then drops the poll records they made
stale. So a committed push is always applied — by the next drain, within ``INTERVAL_S`` when
idle — without a message or an outbox intent per push.

A batch that raises is rolled back and its rows are applied one at a time, each failure counted
on its row; a row that failed ``DRAIN_ATTEMPTS`` times is left to the inbox sweep, which sends it
to ``process_push`` with dramatiq's retries and backoff.
"""

from __future__ import annotations

import logging
import threading

from dramatiq import Middleware, Worker
from dramatiq.broker import Broker
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from cardpipe.db import session_scope
from cardpipe.outbound import deferral_ms
from cardpipe.services import inbox, push_effects
from workers.claims import invalidate_or_queue

log = logging.getLogger(__name__)

QUEUE = "events"
#: How often an idle drain looks for pushes.
INTERVAL_S = 0.1
BATCH = 200
#: Failed attempts after which a push is the sweep's (and ``process_push``'s) to retry.
DRAIN_ATTEMPTS = 3


def drain_once() -> int:
    """Apply one batch of stored pushes; how many rows were taken."""
    try:
        with session_scope() as session:
            drained = push_effects.apply_pending(session, limit=BATCH, max_attempts=DRAIN_ATTEMPTS)
    except Exception as exc:
        log.warning("a batch of pushes failed (%s); applying them one by one", exc)
        return _one_by_one()
    invalidate_or_queue(drained.cache_keys)
    return len(drained.inbox_ids)


def _one_by_one() -> int:
    with session_scope() as session:
        ids = [row[0] for row in inbox.take_pushes(session, limit=BATCH, max_attempts=DRAIN_ATTEMPTS)]
    for inbox_id in ids:
        try:
            with session_scope() as session:
                stale = push_effects.apply_push(session, inbox_id)
        except Exception as exc:
            if deferral_ms(exc) is None:
                inbox.record_failure(inbox_id, exc)
            log.warning("push %d not applied: %s", inbox_id, exc)
            continue
        invalidate_or_queue(stale or [])
    return len(ids)


class PushDrain(Middleware):
    def __init__(self, *, interval_s: float = INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        if QUEUE not in worker.consumers:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="push-drain", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                busy = drain_once() == BATCH
                if failing:
                    log.info("push drain: the database and Redis answer again")
                failing = False
            except (RedisError, SQLAlchemyError) as exc:
                if not failing:
                    log.warning("push drain waiting for the database or Redis: %s", exc)
                failing, busy = True, False
            except Exception:
                log.exception("push drain failed; trying again")
                busy = False
            if not busy:
                self._stop.wait(self.interval_s)
