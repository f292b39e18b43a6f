"""A PostgreSQL restart in the middle of claim traffic, as the app sees one: every connection
dropped and new ones refused for 3 s. The shared server is never touched: the app processes reach
the test database through a TCP proxy the test cuts and resumes (``tests/outages/harness.py``).

Nothing is dead-lettered, no push WeChat sent is lost (the api rides out the restart inside the
push's request, within WeChat's 5 s), and every ticket ends confirmed by both the client and
WeChat within seconds: nothing is left for the ``code/get`` check 600 s later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from tests.claims.conftest import Buyer, Launch
from tests.outages.conftest import Stack, StartStack, buyers, claim, dead_letters, post_result, unprocessed_inbox
from tests.waiting import wait_until

CUT_S = 3.0
RECOVERY_LIMIT_S = 30.0


def test_a_database_restart_during_claims_dead_letters_nothing_and_leaves_nothing_to_the_600s_check(
    start_stack: StartStack, launch_on: Callable[[Stack], Launch]
) -> None:
    # Given buyers claiming through the api, whose database connections go through the proxy
    stack = start_stack(through_proxy=True)
    assert stack.proxy is not None
    launch = launch_on(stack)
    people = buyers(launch, 24)
    for buyer in people[:8]:
        assert claim(launch, buyer)
    card_lists = {}
    for buyer in people[8:16]:
        poll = launch.poll(buyer)
        assert poll.status_code == 200 and poll.json()["status"] == "ready", poll.text
        card_lists[buyer.order_no] = list(poll.json()["cardList"])

    # When the database goes away for 3 s while those buyers add their cards (WeChat pushes
    # user_get_card to the api) and report back
    stack.proxy.cut()
    cut_at = time.monotonic()
    later: list[tuple[Buyer, dict[str, Any]]] = []
    for buyer in people[8:16]:
        answer = launch.add_card(buyer, card_lists[buyer.order_no])
        assert answer["errMsg"] == "addCard:ok", answer
        report = {"errMsg": answer["errMsg"], "cardList": answer["cardList"]}
        if not post_result(launch, buyer, report):
            later.append((buyer, report))
    time.sleep(max(0.0, CUT_S - (time.monotonic() - cut_at)))
    stack.proxy.resume()
    back = time.monotonic()
    for buyer, report in later:
        assert wait_until(partial(post_result, launch, buyer, report), what="a result", timeout_s=20)
    for buyer in people[16:]:
        assert wait_until(partial(claim, launch, buyer), what="a claim", timeout_s=20)

    # Then every ticket is confirmed by both signals within seconds, and nothing was dead-lettered
    wait_until(
        lambda: unprocessed_inbox() == 0 and all(launch.settled(b) for b in people),
        what="every ticket confirmed by the client and by WeChat",
        timeout_s=RECOVERY_LIMIT_S,
    )
    assert time.monotonic() - back <= RECOVERY_LIMIT_S
    assert dead_letters(stack.redis.url) == 0
    pushes = [p for p in launch.fake.pushes(launch.world.oa_appid) if p["event"] == "user_get_card"]
    assert len(pushes) == len(people)
    assert {(p["status"], p["reply"]) for p in pushes} == {("delivered", "success")}
