"""Fixtures for the outage suite: a private Redis (and, for the database, a TCP proxy in front of
the test PostgreSQL), the app's processes on them, and an event at launch whose buyers claim
through the api over HTTP while the fake WeChat pushes to it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url

from cardpipe.db import session_scope
from models import Event, InboxItem, Order
from tests.claims.conftest import Buyer, Launch, make_launch
from tests.conftest import ADMIN_TOKEN
from tests.outages.harness import AppProcesses, RedisServer, TcpProxy
from tests.waiting import wait_until
from tests.worlds import World
from wechat.fake import FakeWeChatControl

#: Small chunks, so a pre-issue is several messages; WeChat's own 5 s push timeout and 3 tries.
STACK_SETTINGS = {"CARDPIPE_PREISSUE_CHUNK_TICKETS": "100"}


@dataclass
class Stack:
    redis: RedisServer
    apps: AppProcesses
    proxy: TcpProxy | None = None


StartStack = Callable[..., Stack]


@pytest.fixture
def start_stack(tmp_path: Path, database_url: str) -> Iterator[StartStack]:
    """``start_stack(appendonly=…, through_proxy=…, scheduler=…, **settings)``: a private
    redis-server, then the api and a worker (and a scheduler) on it and on the test database
    (through a cuttable TCP proxy if asked)."""
    started: list[Stack] = []
    proxies: list[TcpProxy] = []

    def start(
        *, appendonly: bool = False, through_proxy: bool = False, api: bool = True, worker: bool = True, **settings: str
    ) -> Stack:
        redis = RedisServer(tmp_path / f"redis-{len(started)}", appendonly=appendonly)
        redis.start()
        url = make_url(database_url)
        proxy = None
        if through_proxy:
            proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).__enter__()
            proxies.append(proxy)
            url = url.set(host="127.0.0.1", port=proxy.port)
        apps = AppProcesses(
            tmp_path,
            redis_url=redis.url,
            database_url=url.render_as_string(hide_password=False),
            **{**STACK_SETTINGS, **settings},
        )
        stack = Stack(redis, apps, proxy)
        started.append(stack)
        if api:
            apps.start_api()
        if worker:
            apps.start_worker()
        return stack

    yield start
    for stack in started:
        stack.apps.stop()
        stack.redis.kill()
    for proxy in proxies:
        proxy.__exit__(None, None, None)


@pytest.fixture
def launch_on(cardpipe_world: World, fake: FakeWeChatControl) -> Iterator[Callable[[Stack], Launch]]:
    """An issued, audited event whose OA pushes to the stack's api."""
    made: list[Launch] = []

    def make(stack: Stack) -> Launch:
        fake.configure(push_timeout_s=5.0, push_tries=3, push_retry_delay_s=0)
        launch = make_launch(cardpipe_world, fake, stack.apps.api_url)
        fake.review_card(launch.card_id)
        wait_until(lambda: launch.event().card_status == "CARD_STATUS_VERIFY_OK", what="card_pass_check applied")
        made.append(launch)
        return launch

    yield make
    for launch in made:
        launch.http.close()


def buyers(launch: Launch, count: int) -> list[Buyer]:
    """``count`` one-ticket buyers, pre-issued and logged in."""
    made = [launch.buyer(issue=False) for _ in range(count)]
    launch.issue([buyer.order_id for buyer in made])
    for buyer in made:
        launch.login(buyer)
    return made


def draft_event(launch: Launch, orders: int) -> tuple[int, str]:
    """A second event of the launch's accounts, with ``orders`` one-ticket orders and a card
    whose stock (1) does not cover them: (event id, card id)."""
    card_id = launch.world.create_card(approve=False, quantity=1, get_limit=50)
    tag = uuid.uuid4().hex[:8]
    with session_scope() as session:
        source = session.get_one(Event, launch.event_id)
        event = Event(
            name="Outage",
            official_account_id=source.official_account_id,
            mini_program_id=source.mini_program_id,
            card_id=card_id,
            orders_total=orders,
            tickets_total=orders,
        )
        session.add(event)
        session.flush()
        rows = [
            {"event_id": event.id, "order_no": f"P{tag}-{i}", "mp_openid": f"oP{tag}{i}", "ticket_count": 1}
            for i in range(orders)
        ]
        session.execute(insert(Order), rows)
        return event.id, card_id


def start_preissue(api_url: str, event_id: int) -> requests.Response:
    return requests.post(
        f"{api_url}/v1/admin/events/{event_id}/preissue", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10
    )


def unprocessed_inbox() -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).where(InboxItem.processed_at.is_(None))) or 0)


def dead_letters(redis_url: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return sum(int(client.zcard(key)) for key in client.scan_iter("dramatiq:*.XQ"))
    finally:
        client.close()


def claim(launch: Launch, buyer: Buyer) -> dict[str, Any] | None:
    """Poll, add the card at the fake, report the result: the result posted, or None if the api
    answered 503 somewhere (the client tries again later). Never a 500."""
    poll = launch.poll(buyer)
    assert poll.status_code in (200, 503), poll.text
    if poll.status_code == 503 or poll.json()["status"] != "ready":
        return None
    answer = launch.add_card(buyer, list(poll.json()["cardList"]))
    assert answer["errMsg"] == "addCard:ok", answer
    report = {"errMsg": answer["errMsg"], "cardList": answer["cardList"]}
    return report if post_result(launch, buyer, report) else None


def post_result(launch: Launch, buyer: Buyer, report: dict[str, Any]) -> bool:
    response = launch.post_result(buyer, report)
    assert response.status_code in (202, 503), response.text
    if response.status_code == 503:
        assert response.headers.get("Retry-After"), response.headers
    return response.status_code == 202
