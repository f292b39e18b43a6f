"""The transactional outbox: an intent commits with its work, is sent after the commit or by the
relay, is forgotten once its message did its work, and is sent again if Redis lost its data."""

from __future__ import annotations

import dramatiq
from redis import Redis
from sqlalchemy import select

from cardpipe.db import session_scope
from cardpipe.services import outbox
from models import OutboxMessage
from tests.waiting import wait_until
from workers.broker import broker
from workers.claims import invalidate_claims
from workers.outbox import EPOCH_KEY, check_epoch, flush, relay_once


def _rows() -> list[tuple[int, bool]]:
    with session_scope() as session:
        rows = session.execute(select(OutboxMessage.id, OutboxMessage.sent_at).order_by(OutboxMessage.id))
        return [(row.id, row.sent_at is not None) for row in rows]


def _queued(queue: str) -> int:
    return int(broker.client.hlen(f"dramatiq:{queue}.msgs"))


def test_an_intent_rolled_back_with_its_work_is_never_sent(engine: object, redis_url: str) -> None:
    broker.flush_all()
    try:
        with session_scope() as session:
            outbox.add(session, invalidate_claims.actor_name, ["cardpipe:claim:x"])
            raise RuntimeError("the work failed")
    except RuntimeError:
        pass
    assert _rows() == []
    assert relay_once(broker, older_than_s=0) == 0


def test_an_unsent_intent_is_sent_by_the_relay_and_forgotten_once_done(
    engine: object, redis_url: str, broker_worker: dramatiq.Worker
) -> None:
    # Given an intent whose writer never got to send it (Redis refused, or the writer died)
    with session_scope() as session:
        intent = outbox.add(session, invalidate_claims.actor_name, ["cardpipe:claim:a"])
    assert _rows() == [(intent.id, False)]
    # When the relay runs, Then it sends it, and the worker's success forgets it
    wait_until(lambda: _rows() == [], what="the intent sent, done and forgotten", timeout_s=15)


def test_redis_that_lost_its_data_gets_every_open_intent_again(engine: object, redis_url: str) -> None:
    broker.flush_all()
    redis = Redis.from_url(redis_url)
    check_epoch(broker)
    with session_scope() as session:
        intents = outbox.add_many(session, invalidate_claims.actor_name, [[["k1"]], [["k2"]]])
    assert flush(intents)
    assert _rows() == [(intents[0].id, True), (intents[1].id, True)] and _queued("claims") == 2
    # When Redis comes back empty
    redis.flushdb()
    assert check_epoch(broker) == 2
    assert check_epoch(broker) == 0  # one resend per loss
    assert _rows() == [(intents[0].id, False), (intents[1].id, False)]
    assert relay_once(broker, older_than_s=0) == 2
    assert _queued("claims") == 2 and redis.exists(EPOCH_KEY)
    redis.close()


def test_an_intent_naming_no_actor_is_dropped(engine: object, redis_url: str) -> None:
    with session_scope() as session:
        outbox.add(session, "no_such_actor", 1)
    assert relay_once(broker, older_than_s=0) == 1
    assert _rows() == []
