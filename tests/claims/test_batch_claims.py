"""Several orders in one ``wx.addCard``: ``POST /v1/claims`` answers every ready order's cards
in one cardList, ``POST /v1/claims/result`` takes what WeChat returned for them."""

from __future__ import annotations

from typing import Any

import dramatiq
import requests

from models import InboxSource, TicketState
from tests.claims.conftest import Buyer, Launch, drain, inbox_rows
from tests.waiting import wait_until


def claim(launch: Launch, buyer: Buyer, order_nos: list[str]) -> requests.Response:
    return launch.http.post(f"{launch.api}/v1/claims", json={"order_nos": order_nos}, headers=launch.auth(buyer))


def post_result(launch: Launch, buyer: Buyer, order_nos: list[str], result: dict[str, Any]) -> requests.Response:
    body = {"order_nos": order_nos, **{k: v for k, v in result.items() if k in ("errMsg", "cardList")}}
    return launch.http.post(f"{launch.api}/v1/claims/result", json=body, headers=launch.auth(buyer))


def test_three_orders_are_claimed_with_one_add_card(launch: Launch, broker_worker: dramatiq.Worker) -> None:
    # Given a person with three orders, one of them for two tickets
    first = launch.buyer()
    launch.login(first)
    orders = [first, launch.another_order(first, tickets=2), launch.another_order(first)]
    numbers = [order.order_no for order in orders]

    # When the mini program claims them together, adds the cards and posts the result
    answer = claim(launch, first, numbers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "ready" and len(body["cardList"]) == 4
    assert body["orders"] == [{"order_no": n, "status": "ready"} for n in numbers]
    added = launch.add_card(first, body["cardList"])
    assert added["errMsg"] == "addCard:ok", added
    accepted = post_result(launch, first, numbers, added)

    # Then every ticket is claimed by both signals, and each order's own poll says done
    assert accepted.status_code == 202 and accepted.json() == {"duplicate": False, "resigned": False}
    wait_until(lambda: all(launch.settled(order) for order in orders), what="every ticket claimed by both signals")
    assert all(launch.poll(first, order_no=n).json()["status"] == "done" for n in numbers)
    assert claim(launch, first, numbers).json() == {
        "status": "done",
        "cardList": [],
        "orders": [{"order_no": n, "status": "done"} for n in numbers],
        "retry_after_ms": None,
    }
    assert post_result(launch, first, numbers, added).json()["duplicate"] is True
    assert len(inbox_rows(InboxSource.CLIENT)) == 1


def test_a_cancelled_batch_is_re_signed_and_the_retry_succeeds(launch: Launch, broker_worker: dramatiq.Worker) -> None:
    first = launch.buyer()
    launch.login(first)
    orders = [first, launch.another_order(first)]
    numbers = [order.order_no for order in orders]
    card_list = claim(launch, first, numbers).json()["cardList"]

    cancelled = launch.add_card(first, card_list, cancel=True)
    report = post_result(launch, first, numbers, {**cancelled, "cardList": card_list}).json()

    assert report == {"duplicate": False, "resigned": True}
    assert launch.add_card(first, card_list)["_fake"]["reason"] == "nonce_reused"
    fresh = claim(launch, first, numbers).json()["cardList"]
    assert {item["cardExt"] for item in fresh}.isdisjoint(item["cardExt"] for item in card_list)
    retry = launch.add_card(first, fresh)
    assert retry["errMsg"] == "addCard:ok", retry
    post_result(launch, first, numbers, retry)
    wait_until(lambda: all(launch.settled(order) for order in orders), what="claimed after the retry")


def test_ready_orders_are_served_while_another_is_issued_just_in_time(
    launch: Launch, broker_worker: dramatiq.Worker
) -> None:
    first = launch.buyer()
    launch.login(first)
    late = launch.another_order(first, issue=False)

    body = claim(launch, first, [first.order_no, late.order_no]).json()

    assert body["status"] == "ready" and len(body["cardList"]) == 1
    assert [o["status"] for o in body["orders"]] == ["ready", "pending"]
    drain(broker_worker)
    wait_until(lambda: claim(launch, first, [late.order_no]).json()["status"] == "ready", what="the late order issued")


def test_an_order_that_is_not_the_callers_refuses_the_whole_batch(launch: Launch) -> None:
    mine, theirs = launch.buyer(), launch.buyer()
    launch.login(mine)

    asked = claim(launch, mine, [mine.order_no, theirs.order_no])
    posted = post_result(launch, mine, [mine.order_no, theirs.order_no], {"errMsg": "addCard:fail cancel"})

    assert asked.status_code == posted.status_code == 404
    assert theirs.order_no in asked.json()["detail"] and theirs.order_no in posted.json()["detail"]
    assert inbox_rows(InboxSource.CLIENT) == []
    assert launch.tickets(mine)[0].state == TicketState.READY


def test_a_batch_must_name_one_to_ten_orders(launch: Launch) -> None:
    buyer = launch.buyer()
    launch.login(buyer)

    assert claim(launch, buyer, []).status_code == 422
    assert claim(launch, buyer, [f"N{i}" for i in range(11)]).status_code == 422
    assert claim(launch, buyer, ["bad/number"]).status_code == 422
