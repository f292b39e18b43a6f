"""Redis outages around a launch, on the real app processes (api, worker, scheduler) with a
redis-server the test starts, kills and restarts itself:

* Redis killed and restarted empty right after a pre-issue started and in the middle of claim
  traffic: every order is issued, the card's stock is raised, every push and result the api
  stored is applied, within 30 s of Redis returning.
* Redis restarted from its append-only file: 503 with Retry-After (never a 500) while it is away,
  no 5xx at all once it is back.
* The scheduler is alive and leading after a 10 s outage, without a supervisor.
* A planner message dropped on the floor: the stock is still raised, and the event does not read
  ``issued`` before it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import dramatiq
import redis
import requests
from sqlalchemy import func, select, update

from cardpipe.db import session_scope
from cardpipe.redis_values import as_text
from cardpipe.runtime import credential_store
from cardpipe.services.preissue import tracking
from cardpipe.services.preissue.issue import issue_orders
from models import Event, EventState, Ticket
from scheduler import LEASE_KEY
from tests.claims.conftest import Buyer, Launch, make_launch
from tests.conftest import ADMIN_TOKEN
from tests.outages.conftest import (
    Stack,
    StartStack,
    buyers,
    claim,
    dead_letters,
    draft_event,
    post_result,
    start_preissue,
    unprocessed_inbox,
)
from tests.waiting import wait_until
from tests.worlds import World
from wechat.fake import FakeWeChatControl
from workers.broker import broker
from workers.preissue import requeue_missing_tickets

RECOVERY_LIMIT_S = 30.0
PREISSUE_ORDERS = 600


def _tickets(event_id: int) -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).where(Ticket.event_id == event_id)) or 0)


def _state(event_id: int) -> str:
    with session_scope() as session:
        return session.get_one(Event, event_id).state


def _claim_or_keep(launch: Launch, buyer: Buyer, later: list[tuple[Buyer, dict[str, Any] | None]]) -> None:
    """Claim; whatever the api could not take now (503) is tried again once Redis is back."""
    poll = launch.poll(buyer)
    assert poll.status_code in (200, 503), poll.text
    if poll.status_code == 503 or poll.json()["status"] != "ready":
        later.append((buyer, None))
        return
    answer = launch.add_card(buyer, list(poll.json()["cardList"]))
    report = {"errMsg": answer["errMsg"], "cardList": answer["cardList"]}
    if not post_result(launch, buyer, report):
        later.append((buyer, report))


def _finish(launch: Launch, later: list[tuple[Buyer, dict[str, Any] | None]]) -> None:
    for buyer, report in later:
        if report is None:
            assert wait_until(partial(claim, launch, buyer), what="a claim after the outage", timeout_s=20)
        else:
            assert wait_until(partial(post_result, launch, buyer, report), what="a result", timeout_s=20)


def _all_done(launch: Launch, people: list[Buyer], event_id: int, card_id: str) -> Callable[[], bool]:
    def done() -> bool:
        return (
            _state(event_id) == EventState.ISSUED
            and launch.fake.card(card_id)["stock"] >= PREISSUE_ORDERS
            and unprocessed_inbox() == 0
            and all(launch.settled(buyer) for buyer in people)
        )

    return done


def test_redis_lost_mid_preissue_and_claims_every_order_issued_and_applied_within_30s(
    start_stack: StartStack, launch_on: Callable[[Stack], Launch]
) -> None:
    # Given the app on a Redis without persistence, buyers claiming, and an event to pre-issue
    stack = start_stack()
    launch = launch_on(stack)
    people = buyers(launch, 24)
    event_id, card_id = draft_event(launch, PREISSUE_ORDERS)
    for buyer in people[:8]:
        assert claim(launch, buyer)

    # When Redis loses everything right after the pre-issue started, while buyers go on claiming
    assert start_preissue(launch.api, event_id).status_code == 202
    stack.redis.kill()
    later: list[tuple[Buyer, dict[str, Any] | None]] = []
    for buyer in people[8:16]:
        _claim_or_keep(launch, buyer, later)
    stack.redis.start(empty=True)
    back = time.monotonic()
    for buyer in people[16:]:
        _claim_or_keep(launch, buyer, later)
    _finish(launch, later)

    # Then within 30 s every order is issued, the stock raised, every push and result applied
    wait_until(_all_done(launch, people, event_id, card_id), what="everything done", timeout_s=RECOVERY_LIMIT_S)
    assert time.monotonic() - back <= RECOVERY_LIMIT_S
    assert _tickets(event_id) == PREISSUE_ORDERS
    assert dead_letters(stack.redis.url) == 0


def test_redis_restarted_from_its_aof_503_while_away_and_no_5xx_once_back(
    start_stack: StartStack, launch_on: Callable[[Stack], Launch]
) -> None:
    stack = start_stack(appendonly=True)
    launch = launch_on(stack)
    people = buyers(launch, 12)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    queues_url = f"{launch.api}/ops/queues"
    assert requests.get(queues_url, headers=admin, timeout=10).status_code == 200
    time.sleep(1.2)  # appendfsync everysec

    stack.redis.kill()
    away = requests.get(queues_url, headers=admin, timeout=10)
    assert away.status_code == 503 and away.headers["Retry-After"], away.text
    later: list[tuple[Buyer, dict[str, Any] | None]] = []
    for buyer in people[:6]:
        batch = launch.http.post(
            f"{launch.api}/v1/claims", json={"order_nos": [buyer.order_no]}, headers=launch.auth(buyer), timeout=10
        )
        assert batch.status_code in (200, 503), batch.text
        _claim_or_keep(launch, buyer, later)

    stack.redis.start()
    statuses: list[int] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        statuses.append(requests.get(queues_url, headers=admin, timeout=10).status_code)
        statuses.append(launch.poll(people[0]).status_code)
    for buyer in people[6:]:
        _claim_or_keep(launch, buyer, later)
    _finish(launch, later)
    assert statuses and max(statuses) < 500, sorted(set(statuses))
    wait_until(
        lambda: unprocessed_inbox() == 0 and all(launch.settled(b) for b in people),
        what="every result and push applied",
        timeout_s=RECOVERY_LIMIT_S,
    )
    assert dead_letters(stack.redis.url) == 0


def test_the_scheduler_is_alive_and_leading_after_a_10s_redis_outage(start_stack: StartStack) -> None:
    stack = start_stack(
        api=False,
        worker=False,
        CARDPIPE_SCHEDULER_LEASE_S="2",
        CARDPIPE_SCHEDULER_RENEW_S="0.5",
        CARDPIPE_SCHEDULER_RECONCILE_EVERY_S="1",
    )
    scheduler = stack.apps.start_scheduler()
    client = redis.Redis.from_url(stack.redis.url)

    def leads() -> bool:
        try:
            holder = client.get(LEASE_KEY)
        except redis.RedisError:
            return False
        return holder is not None and as_text(holder).split(":")[1] == str(scheduler.pid)

    wait_until(leads, what="the scheduler leading", timeout_s=30)
    stack.redis.kill()
    time.sleep(10)
    assert scheduler.poll() is None, stack.apps.log("scheduler")
    stack.redis.start(empty=True)
    wait_until(leads, what="the scheduler leading again", timeout_s=10)
    wait_until(lambda: client.hlen("dramatiq:maintenance.msgs") > 0, what="its jobs sent again", timeout_s=10)
    assert scheduler.poll() is None
    client.close()


def test_a_planner_message_dropped_on_the_floor_still_gets_the_stock_raised(
    cardpipe_world: World, fake: FakeWeChatControl, broker_worker: dramatiq.Worker
) -> None:
    # Given a pre-issue whose planner message never reached a worker (refused, lost, dead-lettered)
    launch = make_launch(cardpipe_world, fake, "http://127.0.0.1:9")
    event_id, card_id = draft_event(launch, 50)
    with session_scope() as session:
        tracking.start_preissue(session, event_id)
        session.execute(
            update(Event).where(Event.id == event_id).values(preissue_started_at=datetime.now(UTC) - timedelta(hours=1))
        )
    # And a reconcile that issued every order's tickets without it
    with session_scope() as session:
        order_ids = tracking.orders_missing_tickets(session, event_id, 1000)
        issue_orders(session, event_id, order_ids, card_ticket=credential_store().card_ticket)
    assert _tickets(event_id) == 50
    # Then the event does not read issued while WeChat could not hand its cards out
    assert _state(event_id) == EventState.PREISSUING
    assert fake.card(card_id)["stock"] == 1

    # When the stuck-pre-issue reconcile runs
    requeue_missing_tickets.send()
    for queue in ("maintenance", "preissue"):
        broker.join(queue, timeout=30_000)
    broker_worker.join()

    # Then the planner ran again: the stock covers every ticket, and only then is the event issued
    assert fake.card(card_id)["stock"] >= 50
    assert _state(event_id) == EventState.ISSUED
