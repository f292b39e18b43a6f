"""``GET /v1/orders/{order_no}/cards``: the real codes of the caller's tickets that are in their
WeChat card package, the ``cardList`` ``wx.openCard`` takes."""

from __future__ import annotations

import dramatiq

from tests.claims.conftest import Launch
from tests.waiting import wait_until


def test_the_holder_gets_the_codes_of_claimed_tickets_only(launch: Launch, broker_worker: dramatiq.Worker) -> None:
    buyer = launch.buyer(tickets=2)
    launch.login(buyer)
    url = f"{launch.api}/v1/orders/{buyer.order_no}/cards"

    before = launch.http.get(url, headers=launch.auth(buyer))
    launch.post_result(buyer, launch.add_card(buyer, launch.ready_card_list(buyer)))
    wait_until(lambda: launch.settled(buyer), what="claimed")
    after = launch.http.get(url, headers=launch.auth(buyer))

    assert before.status_code == 200 and before.json() == {"order_no": buyer.order_no, "cardList": []}
    assert after.json()["cardList"] == [{"cardId": t.card_id, "code": t.code} for t in launch.tickets(buyer)]


def test_someone_elses_order_is_not_found(launch: Launch) -> None:
    owner, other = launch.buyer(), launch.buyer()
    launch.login(other)

    answer = launch.http.get(f"{launch.api}/v1/orders/{owner.order_no}/cards", headers=launch.auth(other))

    assert answer.status_code == 404
