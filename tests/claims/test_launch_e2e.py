"""Launch day, end to end: 500 buyers against the real app over HTTP, real PostgreSQL and Redis,
in-process workers and the fake WeChat (login, wx.addCard, code/decrypt, user_get_card pushes).

Every 5th buyer has two tickets (a batch addCard), every 10th order was not pre-issued (issued
just in time), every 20th buyer backs out of the card page once before adding.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import dramatiq
import pytest
import requests
from sqlalchemy import func, select

from cardpipe.db import session_scope
from models import InboxSource, Order, Ticket, TicketState
from tests.claims.conftest import Buyer, Launch, inbox_rows
from tests.waiting import wait_until
from wechat.fake import FakeWeChatControl

BUYERS = 500
THREADS = 16


class MiniProgram:
    """One thread's mini program: its own HTTP connections to the app and to the fake."""

    def __init__(self, launch: Launch) -> None:
        self.launch = launch
        self.http = requests.Session()
        self.fake = FakeWeChatControl(launch.fake.base_url)

    def claim(self, buyer: Buyer, *, cancel_first: bool) -> None:
        api, mp_appid = self.launch.api, self.launch.world.mp_appid
        code = self.fake.login(buyer.person, mp_appid)
        token = self.http.post(f"{api}/v1/sessions", json={"code": code, "appid": mp_appid}).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        result_url = f"{api}/v1/orders/{buyer.order_no}/claim/result"
        attempts = 2 if cancel_first else 1
        for attempt in range(attempts):
            card_list = self._ready_card_list(buyer, auth)
            cancel = attempt < attempts - 1
            answer = self.fake.add_card(buyer.person, mp_appid, card_list, cancel=cancel)
            assert answer["errMsg"] == ("addCard:fail cancel" if cancel else "addCard:ok"), answer
            report = {"errMsg": answer["errMsg"], "cardList": answer.get("cardList", card_list)}
            assert self.http.post(result_url, json=report, headers=auth).status_code == 202

    def _ready_card_list(self, buyer: Buyer, auth: dict[str, str]) -> list[dict[str, str]]:
        url = f"{self.launch.api}/v1/orders/{buyer.order_no}/claim"
        deadline = time.monotonic() + 30
        while True:
            response = self.http.get(url, headers=auth)
            assert response.status_code == 200, response.text
            body = response.json()
            if body["status"] == "ready":
                return list(body["cardList"])
            assert body["status"] == "pending" and time.monotonic() < deadline, body
            time.sleep(body["retry_after_ms"] / 1000)


def _buyers(launch: Launch) -> list[Buyer]:
    buyers = []
    for index in range(BUYERS):
        buyers.append(launch.buyer(tickets=2 if index % 5 == 0 else 1, issue=False, order_no=f"L-{index:04d}"))
    launch.issue([b.order_id for i, b in enumerate(buyers) if i % 10 != 0])
    return buyers


def _tally() -> dict[str, int]:
    with session_scope() as session:
        row = session.execute(
            select(
                func.count(),
                func.count().filter(Ticket.state == TicketState.CLAIMED),
                func.count().filter(Ticket.confirmed_by_client & Ticket.confirmed_by_wechat),
                func.count().filter(Ticket.oa_openid.is_not(None) & Ticket.unionid.is_not(None)),
            )
        ).one()
    return dict(zip(("tickets", "claimed", "both_signals", "identified"), row, strict=True))


@pytest.mark.slow
def test_500_buyers_claim_every_ticket_confirmed_by_both_signals(
    launch: Launch, broker_worker: dramatiq.Worker
) -> None:
    # Given 500 orders, 600 tickets, 90% pre-issued, and WeChat's own 5 s push timeout (the app
    # shares this process, and its GIL, with 16 client threads, the fake and the workers)
    launch.fake.configure(push_timeout_s=5.0)
    buyers = _buyers(launch)
    expected = sum(2 if i % 5 == 0 else 1 for i in range(BUYERS))
    local = threading.local()

    def run(index: int) -> None:
        if not hasattr(local, "mp"):
            local.mp = MiniProgram(launch)
        local.mp.claim(buyers[index], cancel_first=index % 20 == 0)

    # When every buyer logs in, polls, adds the cards and reports back, 16 at a time
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(run, range(BUYERS)))

    # Then every ticket ends claimed, confirmed by the client and by WeChat, with its holder known
    tally = wait_until(
        lambda: (t := _tally())["both_signals"] == expected and t, what="every ticket confirmed twice", timeout_s=120
    )
    assert tally == {"tickets": expected, "claimed": expected, "both_signals": expected, "identified": expected}
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Order)) == BUYERS
    client_rows = inbox_rows(InboxSource.CLIENT)
    pushes = [r for r in inbox_rows(InboxSource.WECHAT) if r.kind == "user_get_card"]
    assert len(client_rows) == BUYERS + BUYERS // 20  # one success each, plus the cancels
    assert len(pushes) == expected
    assert all(r.processed_at is not None and r.last_error is None for r in client_rows + pushes)
    records = [p for p in launch.fake.pushes(launch.world.oa_appid) if p["event"] == "user_get_card"]
    assert len(records) == expected and {(p["status"], p["reply"]) for p in records} == {("delivered", "success")}
