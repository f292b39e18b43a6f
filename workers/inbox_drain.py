"""The inbox drain: every worker process that serves the ``events`` or ``claims`` queue applies
the stored WeChat pushes and client results in batches, straight from the inbox.

An inbox row is its own work item: the api commits the row (and no outbox intent), and a drain
thread takes up to ``BATCH`` unprocessed rows with ``FOR UPDATE SKIP LOCKED`` (drains in several
processes share the work), applies them and marks them processed in one transaction — pushes
first (:func:`cardpipe.services.push_effects.apply_pending`), then the results that need no WeChat
call (:func:`cardpipe.services.result_effects.apply_ready`), which the pushes just applied
usually prove — then drops the poll records they made stale. So a committed row is always applied
— by the next drain, within ``IDLE_INTERVAL_S`` — without a message per row.

A result that needs WeChat (``code/decrypt`` after the push grace, or a re-sign) is handed to
``process_client_result`` — an outbox intent in the drain's transaction; while the intent is
open the drain takes the row no more — so no WeChat call holds up the drain, and quota deferrals
and retries are dramatiq's. A batch of results that raises is handed over the same way. A batch
that meets a deadlock (with another drain or a one-row actor) is rolled back and taken again next
round. A batch of pushes that raises otherwise is rolled back and its rows are applied one at a
time; each failure is counted on its row, and a row that failed ``DRAIN_ATTEMPTS`` times is left
to the inbox sweep, which sends it to ``process_push`` with dramatiq's retries and backoff.
"""

from __future__ import annotations

import logging
import threading

from dramatiq import Middleware, Worker
from dramatiq.broker import Broker
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from cardpipe.db import session_scope
from cardpipe.services import inbox, outbox, push_effects, result_effects
from cardpipe.services.outbox import Intent
from cardpipe.settings import get_settings
from workers.claims import invalidate_or_queue, process_client_result, wechat_ports
from workers.outbox import flush

log = logging.getLogger(__name__)

PUSH_QUEUE = "events"
RESULT_QUEUE = "claims"
#: How often a drain that found rows, but less than a full batch, looks again. A round costs
#: about the same dozen statements however few rows it takes: at a launch's pace a pause of
#: 0.1 s made rounds of a handful of rows, and the rounds most of the workers' CPU.
INTERVAL_S = 0.25
#: A drain that finds nothing looks less and less often, down to this: an idle drain's rounds
#: were most of an idle worker's CPU. The first row after a quiet spell waits at most this long.
IDLE_INTERVAL_S = 0.4
BATCH = 200
#: Failed attempts after which a row is the sweep's (and its actor's) to retry.
DRAIN_ATTEMPTS = 3


def drain_once(*, pushes: bool = True, results: bool = True) -> int:
    """Apply one batch of stored pushes and one of client results; how many rows were taken."""
    taken = 0
    if pushes:
        taken += _drain_pushes()
    if results:
        taken += _drain_results()
    return taken


#: PostgreSQL's deadlock and serialization failures: the batch is simply taken again next round.
_TRANSIENT_SQLSTATES = {"40P01", "40001"}


def _transient(exc: Exception) -> bool:
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in _TRANSIENT_SQLSTATES


def _drain_pushes() -> int:
    try:
        with session_scope() as session:
            drained = push_effects.apply_pending(session, limit=BATCH, max_attempts=DRAIN_ATTEMPTS)
    except Exception as exc:
        if _transient(exc):
            log.info("a batch of pushes met a deadlock; taken again next round")
            return 0
        log.warning("a batch of pushes failed (%s); applying them one by one", exc)
        return _one_by_one()
    invalidate_or_queue(drained.cache_keys)
    return len(drained.inbox_ids)


def _drain_results() -> int:
    ports = wechat_ports()
    grace_s = get_settings().claim_push_grace_ms / 1000
    try:
        with session_scope() as session:
            drained = result_effects.apply_ready(
                session,
                limit=BATCH,
                max_attempts=DRAIN_ATTEMPTS,
                grace_s=grace_s,
                ports=ports,
                passed_to=process_client_result.actor_name,
            )
            intents = _hand_off(session, drained.need_wechat)
    except Exception as exc:
        if _transient(exc):
            log.info("a batch of client results met a deadlock; taken again next round")
            return 0
        log.warning("a batch of client results failed (%s); handing them to their actor", exc)
        with session_scope() as session:
            intents = _hand_off(session, _result_ids(session))
        flush(intents)
        return len(intents)
    invalidate_or_queue(drained.cache_keys)
    flush(intents)
    return len(drained.inbox_ids) + len(intents)


def _hand_off(session: Session, inbox_ids: list[int]) -> list[Intent]:
    """Pass results to ``process_client_result`` (WeChat calls, quota-aware retries, its own
    transaction) with an outbox intent each, in this transaction: while it is open the drain
    takes the row no more."""
    return outbox.add_many(session, process_client_result.actor_name, [[inbox_id] for inbox_id in inbox_ids])


def _result_ids(session: Session) -> list[int]:
    taken = inbox.take_results(
        session, limit=BATCH, max_attempts=DRAIN_ATTEMPTS, passed_to=process_client_result.actor_name
    )
    return [row[0] for row in taken]


def _one_by_one() -> int:
    """Apply the pushes of a failed batch each in its own transaction; a failure is counted on its row."""
    with session_scope() as session:
        ids = [row[0] for row in inbox.take_pushes(session, limit=BATCH, max_attempts=DRAIN_ATTEMPTS)]
    for inbox_id in ids:
        try:
            with session_scope() as session:
                stale = push_effects.apply_push(session, inbox_id)
        except Exception as exc:
            inbox.record_failure(inbox_id, exc)
            log.warning("push %d not applied: %s", inbox_id, exc)
            continue
        invalidate_or_queue(stale or [])
    return len(ids)


class InboxDrain(Middleware):
    def __init__(self, *, interval_s: float = INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        pushes, results = PUSH_QUEUE in worker.consumers, RESULT_QUEUE in worker.consumers
        if not (pushes or results):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(pushes, results), name="inbox-drain", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self, pushes: bool, results: bool) -> None:
        failing = False
        pause = self.interval_s
        while not self._stop.is_set():
            taken = 0
            try:
                taken = drain_once(pushes=pushes, results=results)
                if failing:
                    log.info("inbox drain: the database and Redis answer again")
                failing = False
            except (RedisError, SQLAlchemyError) as exc:
                if not failing:
                    log.warning("inbox drain waiting for the database or Redis: %s", exc)
                failing = True
            except Exception:
                log.exception("inbox drain failed; trying again")
            pause = self.interval_s if taken else min(2 * pause, max(self.interval_s, IDLE_INTERVAL_S))
            if taken < BATCH:
                self._stop.wait(pause)
