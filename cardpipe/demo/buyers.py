"""The demo's buyers: threads, each a person at the fake WeChat, claiming their tickets as the
Mini Program would (log in, ask for the claim, poll, ``wx.addCard``, post the result).

Most claim all their orders with one ``wx.addCard``; every ``ORDER_BY_ORDER_EVERY``-th claims them
one order at a time; some cancel the card page once and try again. A failed ``wx.addCard`` is
counted in ``errors`` and retried after a pause, up to ``CLAIM_ATTEMPTS`` times.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

from cardpipe.demo.http import USER_THREADS, ok, retrying
from wechat.fake import FakeWeChatControl

#: Every n-th user claims order by order (poll, addCard, result per order) instead of all at once.
ORDER_BY_ORDER_EVERY = 20
CANCEL_EVERY = 10
#: A user whose addCard failed taps again after a moment; the demo gives up after this many.
CLAIM_ATTEMPTS = 10
RETRY_PAUSE_S = 0.3


@dataclass
class Buyers:
    #: The api's URL of a path.
    api: Callable[[str], str]
    fake: FakeWeChatControl
    mp_appid: str
    #: person name → their order numbers.
    orders_of: dict[str, list[str]]
    #: What went wrong, by kind (shared with the demo's report).
    errors: Counter[str]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claim_all(self, people: list[dict[str, Any]], *, halfway: Callable[[], None]) -> None:
        """Every person claims their orders, ``USER_THREADS`` at a time; ``halfway`` runs once half
        of them are done (the demo rotates the card api_ticket there)."""
        half = len(people) // 2
        with ThreadPoolExecutor(USER_THREADS) as pool:
            for index, _ in enumerate(pool.map(self._user_claims, people)):
                if index + 1 == half:
                    halfway()

    def _user_claims(self, person: dict[str, Any]) -> None:
        """Most users claim all their orders with one ``wx.addCard``; every ``ORDER_BY_ORDER_EVERY``-th
        claims them one order at a time. Some cancel the card page once and try again."""
        name = person["name"]
        client = retrying(requests.Session())
        code = self.fake.login(name, self.mp_appid)
        session = ok(client.post(self.api("/v1/sessions"), json={"code": code, "appid": self.mp_appid}))
        client.headers["Authorization"] = f"Bearer {session['token']}"
        numbers = self.orders_of[name]
        index = int(name.rsplit("-", 1)[1])
        if index % ORDER_BY_ORDER_EVERY == 0:
            for position, order_no in enumerate(numbers):
                self._claim_one(client, name, order_no, cancel_first=position == 0 and index % CANCEL_EVERY == 0)
        else:
            self._claim_together(client, name, numbers, cancel_first=index % CANCEL_EVERY == 1)

    def _claim_together(self, client: requests.Session, person: str, numbers: list[str], cancel_first: bool) -> None:
        for attempt in range(CLAIM_ATTEMPTS):
            answer = ok(client.post(self.api("/v1/claims"), json={"order_nos": numbers}))
            if answer["status"] == "done":
                return
            if answer["status"] == "pending":
                time.sleep(answer["retry_after_ms"] / 1000)
                continue
            outcome = self._add_and_report(client, person, answer["cardList"], cancel_first and attempt == 0, numbers)
            if outcome:
                return
        self._gave_up()

    def _claim_one(self, client: requests.Session, person: str, order_no: str, cancel_first: bool) -> None:
        base = self.api(f"/v1/orders/{order_no}/claim")
        ok(client.post(base))
        for attempt in range(CLAIM_ATTEMPTS):
            payload = self._poll(client, base)
            if self._add_and_report(client, person, payload["cardList"], cancel_first and attempt == 0, [order_no]):
                return
        self._gave_up()

    def _add_and_report(
        self, client: requests.Session, person: str, card_list: list[dict[str, str]], cancel: bool, numbers: list[str]
    ) -> bool:
        """``wx.addCard`` then the result to the api; True once the cards are added."""
        result = self.fake.add_card(person, self.mp_appid, card_list, cancel=cancel)
        added: bool = result["errMsg"] == "addCard:ok"
        posted = {"errMsg": result["errMsg"], "cardList": result["cardList"] if added else card_list}
        if len(numbers) == 1:
            ok(client.post(self.api(f"/v1/orders/{numbers[0]}/claim/result"), json=posted))
        else:
            ok(client.post(self.api("/v1/claims/result"), json={"order_nos": numbers, **posted}))
        if not added and not cancel:
            with self.lock:
                self.errors[f"addCard: {result['errMsg']}"] += 1
            time.sleep(RETRY_PAUSE_S)
        return added

    def _gave_up(self) -> None:
        with self.lock:
            self.errors[f"claim gave up after {CLAIM_ATTEMPTS} attempts"] += 1

    def _poll(self, client: requests.Session, url: str) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            answer: dict[str, Any] = ok(client.get(url))
            if answer["status"] == "ready":
                return answer
            time.sleep(answer.get("retry_after_ms", 200) / 1000)
        raise RuntimeError(f"{url} stayed pending")
