"""Delivering the outbox (:mod:`cardpipe.services.outbox`) to dramatiq.

* :func:`flush`: the writer of an intent sends it right after its commit and marks it sent. If
  Redis is away the intent simply stays unsent.
* :class:`OutboxRelay`: broker middleware that runs a relay thread in every worker process. Each
  ``RELAY_INTERVAL_S`` it sends the unsent intents older than ``WRITER_GRACE_S`` (rows locked
  with ``SKIP LOCKED``, so relays in several processes share the work) and marks them sent. It
  also watches an epoch key in Redis: a Redis that comes back without it lost its data, and every
  open intent is sent again.
* The same middleware deletes an intent once its message did its work, or was dead-lettered (the
  message carries the intent's id as the ``outbox_id`` option, retries included).

A message may be sent twice (a writer and a relay both, or a resend after data loss); every
actor is idempotent.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import dramatiq
from dramatiq import Middleware, Worker
from dramatiq.broker import Broker, MessageProxy
from dramatiq.errors import ActorNotFound
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from cardpipe.db import get_engine, session_scope
from cardpipe.services import outbox
from cardpipe.services.outbox import Intent
from workers.middleware import as_redis_broker

log = logging.getLogger(__name__)

#: How often an idle relay looks for unsent intents.
RELAY_INTERVAL_S = 0.5
#: An intent this young is still its writer's to send (avoids sending most messages twice).
WRITER_GRACE_S = 2.0
RELAY_BATCH = 500
#: Present while Redis keeps its data; a relay that finds it missing resends every open intent.
EPOCH_KEY = "cardpipe:outbox:epoch"
OPTION = "outbox_id"


def _send(broker: Broker, intents: Sequence[Intent]) -> tuple[list[int], list[int]]:
    """Send each intent: (ids sent, ids naming no actor, which the caller drops). Stops at the
    first broker error, which it raises after the caller had a chance to record what went."""
    sent: list[int] = []
    unknown: list[int] = []
    for intent in intents:
        try:
            actor = broker.get_actor(intent.actor)
        except ActorNotFound:
            log.error("outbox intent %d names no actor %r; dropped", intent.id, intent.actor)
            unknown.append(intent.id)
            continue
        options: dict[str, Any] = {OPTION: intent.id}
        actor.send_with_options(args=tuple(intent.args), **options)
        sent.append(intent.id)
    return sent, unknown


def flush(intents: Sequence[Intent]) -> bool:
    """Send just-committed intents and mark them sent; False (and the intents left to the relay)
    if Redis or the database refused."""
    if not intents:
        return True
    sent: list[int] = []
    unknown: list[int] = []
    try:
        for intent in intents:
            sent_now, unknown_now = _send(dramatiq.get_broker(), [intent])
            sent += sent_now
            unknown += unknown_now
    except RedisError as exc:
        log.warning("broker unavailable (%s); %d messages left to the outbox relay", exc, len(intents) - len(sent))
    try:
        with get_engine().begin() as connection:
            outbox.mark_sent(connection, sent)
            outbox.drop(connection, unknown)
    except SQLAlchemyError as exc:
        log.warning("could not mark %d sent outbox intents (%s); the relay may send them again", len(sent), exc)
    return len(sent) + len(unknown) == len(intents)


def record_and_send(actor: str, *args: Any) -> None:
    """Record one intent in a transaction of its own, then send it: for a message that is itself
    the work (a planner's chunk), so that it outlives a Redis that refuses it."""
    with session_scope() as session:
        intent = outbox.add(session, actor, *args)
    flush([intent])


def sender(actor: dramatiq.Actor[..., Any]) -> Callable[[int], None]:
    """``actor.send`` for a message of one row id, through the outbox (:func:`record_and_send`)."""
    return lambda row_id: record_and_send(actor.actor_name, row_id)


def relay_once(broker: Broker, *, older_than_s: float = WRITER_GRACE_S) -> int:
    """Send one batch of unsent intents; how many were handled."""
    with session_scope() as session:
        intents = outbox.take_unsent(session, older_than_s=older_than_s, limit=RELAY_BATCH)
        sent: list[int] = []
        unknown: list[int] = []
        try:
            sent, unknown = _send(broker, intents)
        finally:
            outbox.mark_sent(session, sent)
            outbox.drop(session, unknown)
    return len(sent) + len(unknown)


def check_epoch(broker: Broker) -> int:
    """If Redis lost its data (the epoch key is gone), set a new epoch and put every open intent
    back to unsent; how many. Exactly one relay wins the new epoch and does it."""
    client = as_redis_broker(broker).client
    if client.exists(EPOCH_KEY) or not client.set(EPOCH_KEY, uuid.uuid4().hex, nx=True):
        return 0
    with session_scope() as session:
        reopened = outbox.resend_open(session)
    if reopened:
        log.warning("Redis lost its data: %d open outbox intents will be sent again", reopened)
    return reopened


class OutboxRelay(Middleware):
    def __init__(self, *, interval_s: float = RELAY_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(broker,), name="outbox-relay", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self, broker: Broker) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                check_epoch(broker)
                busy = relay_once(broker) == RELAY_BATCH
                if failing:
                    log.info("outbox relay: Redis and the database answer again")
                failing = False
            except (RedisError, SQLAlchemyError) as exc:
                if not failing:
                    log.warning("outbox relay waiting for Redis or the database: %s", exc)
                failing, busy = True, False
            except Exception:
                log.exception("outbox relay failed; trying again")
                busy = False
            if not busy:
                self._stop.wait(self.interval_s)

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if exception is None:
            self._finish(message)

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        self._finish(message)

    @staticmethod
    def _finish(message: MessageProxy) -> None:
        intent_id = message.options.get(OPTION)
        if intent_id is None:
            return
        try:
            with get_engine().begin() as connection:
                outbox.drop(connection, [int(intent_id)])
        except SQLAlchemyError as exc:
            # The intent stays open: only a Redis that lost its data would send it again (harmless).
            log.warning("outbox intent %s done but not forgotten: %s", intent_id, exc)
