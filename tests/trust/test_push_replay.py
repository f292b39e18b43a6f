"""Pushes are fresh and their query string cannot carry another body: a safe-mode account takes
only encrypted pushes, a timestamp outside the window is refused, and a (timestamp, nonce) pair
seen before is accepted again only with the same body."""

from __future__ import annotations

import time
from collections.abc import Iterator

import dramatiq
import pytest
import requests
from sqlalchemy import update

from cardpipe.db import session_scope
from cardpipe.services import pushes
from models import InboxSource, OfficialAccount, TicketState
from tests.claims.conftest import Launch, drain, inbox_rows
from wechat.fake.pusher import PushTarget, signed_request
from wechat.pushes import CardEvent, UserConsumeCard, UserDelCard


def post(launch: Launch, event: CardEvent, *, timestamp: int, nonce: str, safe_mode: bool = False) -> requests.Response:
    world = launch.world
    url = f"{launch.api}/wechat/{world.oa_appid}/events"
    push_target = PushTarget(world.oa_appid, url, world.server_token, world.aes_key, safe_mode)
    params, body = signed_request(push_target, event, str(timestamp), nonce)
    return requests.post(url, params=params, data=body.encode(), timeout=10)


def wechat_rows() -> int:
    return len(inbox_rows(InboxSource.WECHAT))


@pytest.fixture
def safe_mode(launch: Launch) -> Iterator[Launch]:
    """The launch's account switched to safe mode in cardpipe (the URL is in safe mode at WeChat)."""
    with session_scope() as session:
        session.execute(
            update(OfficialAccount).where(OfficialAccount.appid == launch.world.oa_appid).values(safe_mode=True)
        )
    pushes._accounts.clear()
    yield launch
    pushes._accounts.clear()


def test_a_safe_mode_account_refuses_a_plain_push(safe_mode: Launch, broker_worker: dramatiq.Worker) -> None:
    launch = safe_mode
    buyer = launch.buyer()
    launch.login(buyer)
    launch.ready_card_list(buyer)
    (ticket,) = launch.tickets(buyer)
    forged = UserConsumeCard("gh", "o-forger", int(time.time()), launch.card_id, code=ticket.code or "")
    stored = wechat_rows()

    plain = post(launch, forged, timestamp=int(time.time()), nonce="plain-1")
    encrypted = post(launch, forged, timestamp=int(time.time()), nonce="aes-1", safe_mode=True)
    drain(broker_worker)

    assert plain.status_code == 403 and "safe mode" in plain.json()["detail"]
    assert (encrypted.status_code, encrypted.text) == (200, "success")
    assert wechat_rows() == stored + 1
    assert launch.tickets(buyer)[0].state == TicketState.REDEEMED  # the encrypted one, not the plain one


@pytest.mark.parametrize("offset_s", [-301, 301])
def test_a_push_outside_the_window_is_refused(launch: Launch, offset_s: int) -> None:
    event = UserDelCard("gh", "o-late", int(time.time()), launch.card_id, code="NOSUCHCODE12")
    stored = wechat_rows()

    answer = post(launch, event, timestamp=int(time.time()) + offset_s, nonce="late-1")

    assert answer.status_code == 403 and "timestamp" in answer.json()["detail"]
    assert wechat_rows() == stored


def test_a_replayed_timestamp_and_nonce_with_another_body_is_refused(
    launch: Launch, broker_worker: dramatiq.Worker
) -> None:
    # Given a push WeChat delivered (a del of some other code)
    buyer = launch.buyer()
    launch.login(buyer)
    launch.ready_card_list(buyer)
    (ticket,) = launch.tickets(buyer)
    now = int(time.time())
    original = UserDelCard("gh", "o-holder", now, launch.card_id, code="SOMEOTHERCODE")
    first = post(launch, original, timestamp=now, nonce="captured-1")

    # When its redelivery arrives, and then the captured query string with a forged body
    again = post(launch, original, timestamp=now, nonce="captured-1")
    forged = post(
        launch,
        UserDelCard("gh", "o-holder", now, launch.card_id, code=ticket.code or ""),
        timestamp=now,
        nonce="captured-1",
    )
    drain(broker_worker)

    # Then the redelivery is the idempotent success, the forgery is refused and changes nothing
    assert [(a.status_code, a.text) for a in (first, again)] == [(200, "success")] * 2
    assert forged.status_code == 403 and "nonce" in forged.json()["detail"]
    assert launch.tickets(buyer)[0].state == TicketState.SERVED
