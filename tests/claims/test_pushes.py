"""WeChat's pushes to ``/wechat/{oa_appid}/events``: URL check, plain and safe-mode pushes checked
before anything is stored, deduplicated (also across a batch addCard), answered ``success`` and
processed by the events worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial

import dramatiq
import pytest
import requests

from models import InboxSource, TicketState
from tests.claims.conftest import Launch, drain, inbox_rows, make_launch
from tests.waiting import wait_until
from tests.worlds import World
from wechat.fake import FakeWeChatControl
from wechat.fake.pusher import PushTarget, signed_request
from wechat.pushes import CardEvent, CardPassCheck, OtherEvent, UserGetCard, render_event
from workers.pushes import process_push


def target(
    launch: Launch, *, safe_mode: bool = False, appid: str | None = None, token: str | None = None
) -> PushTarget:
    world = launch.world
    url = f"{launch.api}/wechat/{world.oa_appid}/events"
    return PushTarget(appid or world.oa_appid, url, token or world.server_token, world.aes_key, safe_mode)


def push(launch: Launch, event: CardEvent, push_target: PushTarget | None = None, **query: str) -> requests.Response:
    """Deliver ``event`` the way WeChat does (the fake's own signing and encryption)."""
    push_target = push_target or target(launch)
    params, body = signed_request(push_target, event, str(int(time.time())), "1234567890")
    url = f"{launch.api}/wechat/{launch.world.oa_appid}/events"
    return launch.http.post(url, params={**params, **query}, data=body.encode(), headers={"Content-Type": "text/xml"})


def wechat_rows() -> int:
    return len(inbox_rows(InboxSource.WECHAT))


def got_card(launch: Launch, buyer_person: str, code: str, ticket_id: int, *, create_time: int) -> UserGetCard:
    return UserGetCard(
        to_user=launch.world.original_id,
        from_user=launch.fake.openid(buyer_person, launch.world.oa_appid),
        create_time=create_time,
        card_id=launch.card_id,
        code=code,
        outer_str=str(ticket_id),
        union_id=launch.fake.person(buyer_person)["unionid"],
    )


@pytest.fixture
def safe_launch(
    cardpipe_world: World, fake: FakeWeChatControl, api_url: str, broker_worker: dramatiq.Worker
) -> Iterator[Launch]:
    """Like ``launch``, with the official account in safe mode (every push encrypted)."""
    launch = make_launch(cardpipe_world, fake, api_url, safe_mode=True)
    fake.review_card(launch.card_id)
    wait_until(lambda: launch.event().card_status == "CARD_STATUS_VERIFY_OK", what="encrypted card_pass_check")
    yield launch
    launch.http.close()


def test_the_server_url_check_echoes_only_for_the_right_signature(launch: Launch) -> None:
    assert launch.fake.verify_url(launch.world.oa_appid, echostr="hello-123") == {
        "ok": True,
        "outcome": "http_200",
        "body": "hello-123",
    }
    url = f"{launch.api}/wechat/{launch.world.oa_appid}/events"
    wrong = launch.http.get(url, params={"signature": "0" * 40, "timestamp": "1", "nonce": "2", "echostr": "x"})
    assert wrong.status_code == 403


def test_a_push_three_times_is_stored_once_and_claims_once(launch: Launch, broker_worker: dramatiq.Worker) -> None:
    # Given a served ticket and WeChat's user_get_card for it
    buyer = launch.buyer()
    launch.login(buyer)
    launch.ready_card_list(buyer)
    (ticket,) = launch.tickets(buyer)
    event = got_card(launch, buyer.person, ticket.code or "", ticket.id, create_time=int(time.time()))

    # When it is delivered three times, and its message is processed twice more
    answers = [push(launch, event) for _ in range(3)]
    drain(broker_worker)
    (row,) = [r for r in inbox_rows(InboxSource.WECHAT) if r.kind == "user_get_card"]
    claimed_at = launch.tickets(buyer)[0].claimed_at
    for _ in range(2):
        process_push.send(row.id)
    drain(broker_worker)

    # Then each was answered "success", one row stored and processed once, one transition
    assert [(a.status_code, a.text) for a in answers] == [(200, "success")] * 3
    (row,) = [r for r in inbox_rows(InboxSource.WECHAT) if r.kind == "user_get_card"]
    assert row.processed_at is not None and row.attempts == 1 and row.last_error is None
    (after,) = launch.tickets(buyer)
    assert (after.state, after.confirmed_by_wechat, after.confirmed_by_client) == (TicketState.CLAIMED, True, False)
    assert after.claimed_at == claimed_at
    assert after.oa_openid == event.from_user and after.unionid == event.union_id


def test_a_batch_add_card_keeps_every_push(launch: Launch) -> None:
    # Given one addCard of three tickets: three pushes, same user and same CreateTime
    buyer = launch.buyer(tickets=3)
    launch.login(buyer)
    answer = launch.add_card(buyer, launch.ready_card_list(buyer))
    assert answer["errMsg"] == "addCard:ok"

    wait_until(lambda: all(t.confirmed_by_wechat for t in launch.tickets(buyer)), what="three user_get_card")
    rows = [r for r in inbox_rows(InboxSource.WECHAT) if r.kind == "user_get_card"]
    assert len(rows) == 3 and len({r.dedupe_key for r in rows}) == 3


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong signature", 403),
        ("wrong token", 403),
        ("unknown account", 404),
        ("malformed xml", 400),
        ("missing signature", 422),
    ],
)
def test_a_bad_plain_push_is_refused_and_nothing_is_stored(launch: Launch, case: str, expected: int) -> None:
    event = CardPassCheck(launch.world.original_id, "o-system", int(time.time()), launch.card_id)
    stored = wechat_rows()
    url = f"{launch.api}/wechat/{launch.world.oa_appid}/events"
    params, body = signed_request(target(launch), event, str(int(time.time())), "42")
    if case == "wrong signature":
        params["signature"] = "0" * 40
    elif case == "wrong token":
        params, body = signed_request(target(launch, token="not-the-token"), event, params["timestamp"], "42")
    elif case == "unknown account":
        url = f"{launch.api}/wechat/wxnobody000000/events"
    elif case == "malformed xml":
        body = "<xml><ToUserName>"
    elif case == "missing signature":
        del params["signature"]

    response = launch.http.post(url, params=params, data=body.encode())

    assert response.status_code == expected and response.json()["detail"]
    assert wechat_rows() == stored


@pytest.mark.parametrize("case", ["wrong msg_signature", "wrong appid", "not base64", "no Encrypt"])
def test_a_bad_safe_mode_push_is_refused_and_nothing_is_stored(safe_launch: Launch, case: str) -> None:
    launch = safe_launch
    event = CardPassCheck(launch.world.original_id, "o-system", int(time.time()), launch.card_id)
    stored = wechat_rows()
    url = f"{launch.api}/wechat/{launch.world.oa_appid}/events"
    appid = "wxsomeoneelse00" if case == "wrong appid" else None
    params, body = signed_request(target(launch, safe_mode=True, appid=appid), event, str(int(time.time())), "42")
    if case == "wrong msg_signature":
        params["msg_signature"] = "0" * 40
    elif case == "not base64":
        body = body.replace("<Encrypt><![CDATA[", "<Encrypt><![CDATA[%%%")
    elif case == "no Encrypt":
        body = render_event(event)

    response = launch.http.post(url, params=params, data=body.encode())

    assert response.status_code in (400, 403), response.text
    assert wechat_rows() == stored


def test_safe_mode_pushes_are_decrypted_and_processed(safe_launch: Launch) -> None:
    buyer = safe_launch.buyer()
    safe_launch.login(buyer)
    answer = safe_launch.add_card(buyer, safe_launch.ready_card_list(buyer))
    safe_launch.post_result(buyer, answer)

    wait_until(lambda: safe_launch.settled(buyer), what="claimed by both signals, push encrypted")
    (push_record,) = [p for p in safe_launch.fake.pushes(safe_launch.world.oa_appid) if p["event"] == "user_get_card"]
    assert push_record["safe_mode"] and push_record["reply"] == "success"


def test_a_body_over_the_limit_is_refused_before_parsing(launch: Launch) -> None:
    stored = wechat_rows()
    params, _ = signed_request(
        target(launch), CardPassCheck("gh", "o", int(time.time()), launch.card_id), str(int(time.time())), "42"
    )
    response = launch.http.post(
        f"{launch.api}/wechat/{launch.world.oa_appid}/events", params=params, data=b"<xml>" + b" " * 70_000 + b"</xml>"
    )
    assert response.status_code == 413 and wechat_rows() == stored


def test_messages_that_are_not_events_are_acknowledged_and_not_stored(launch: Launch) -> None:
    stored = wechat_rows()
    text = "<xml><ToUserName>gh</ToUserName><FromUserName>o</FromUserName><CreateTime>1</CreateTime>"
    text += "<MsgType>text</MsgType><Content>hello</Content></xml>"
    params, _ = signed_request(target(launch), CardPassCheck("gh", "o", 1, "p"), str(int(time.time())), "42")
    response = launch.http.post(f"{launch.api}/wechat/{launch.world.oa_appid}/events", params=params, data=text)
    assert (response.status_code, response.text) == (200, "success") and wechat_rows() == stored


def test_unknown_event_types_are_stored_and_marked_processed(launch: Launch, broker_worker: dramatiq.Worker) -> None:
    event = OtherEvent(launch.world.original_id, "o-viewer", int(time.time()), launch.card_id, name="user_view_card")
    params, body = signed_request(target(launch), event, str(int(time.time())), "42")
    body = body.replace("<Event><![CDATA[]]></Event>", "<Event><![CDATA[user_view_card]]></Event>")

    response = launch.http.post(f"{launch.api}/wechat/{launch.world.oa_appid}/events", params=params, data=body)
    drain(broker_worker)

    assert response.text == "success"
    (row,) = [r for r in inbox_rows(InboxSource.WECHAT) if r.kind == "user_view_card"]
    assert row.processed_at is not None and row.last_error is None


def test_deleting_and_consuming_in_wechat_move_the_ticket(launch: Launch) -> None:
    deleter, consumer = launch.buyer(), launch.buyer()
    for buyer in (deleter, consumer):
        launch.login(buyer)
        answer = launch.add_card(buyer, launch.ready_card_list(buyer))
        launch.post_result(buyer, answer)
        wait_until(partial(launch.settled, buyer), what="claimed")

    launch.fake.delete_user_card(launch.card_id, launch.tickets(deleter)[0].code or "")
    launch.fake.consume_in_back_office(launch.card_id, launch.tickets(consumer)[0].code or "", location_name="Hall A")

    wait_until(lambda: launch.tickets(deleter)[0].state == TicketState.DELETED, what="user_del_card applied")
    wait_until(lambda: launch.tickets(consumer)[0].state == TicketState.REDEEMED, what="user_consume_card applied")
    assert launch.poll(deleter).json()["status"] == "done"


def test_card_audit_verdicts_apply_in_push_order_not_arrival_order(
    launch: Launch, broker_worker: dramatiq.Worker
) -> None:
    # Given the card fails a new audit (a real push from the fake)
    launch.fake.review_card(launch.card_id, approve=False, reason="logo")
    wait_until(lambda: launch.event().card_status == "CARD_STATUS_VERIFY_FAIL", what="card_not_pass_check")

    # When an older card_pass_check is redelivered late
    late = CardPassCheck(launch.world.original_id, "o-system", int(time.time()) - 3600, launch.card_id)
    assert push(launch, late).text == "success"
    drain(broker_worker)

    # Then the newer verdict stands, and the late one is noted
    assert launch.event().card_status == "CARD_STATUS_VERIFY_FAIL"
    (row,) = [
        r
        for r in inbox_rows(InboxSource.WECHAT)
        if r.kind == "card_pass_check" and "later verdict" in (r.last_error or "")
    ]
    assert row.processed_at is not None
