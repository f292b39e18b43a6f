"""A whole event, driven from outside like real users, organisers and gate staff would.

Organiser: registers the accounts, creates the event and its card, imports the orders, starts
pre-issue, runs the doctor (``--misconfigured-card``: fixes what it reports and runs it again).
Users (threads, each a person at the fake WeChat): log in, ask for their claim, poll,
``wx.addCard``, post the result; some cancel first and retry. WeChat (the fake) pushes
``user_get_card`` to the api. Halfway through, the card api_ticket rotates. Gate staff redeem a
share of the codes. Then every ticket's state is checked against what it must be.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
from sqlalchemy import create_engine, text

from cardpipe.demo.buyers import Buyers
from cardpipe.demo.http import ok, retrying
from cardpipe.demo.stack import Stack
from cardpipe.demo.venue import HALL_VISITORS, OFFLINE_ENTRIES, VenueReport, run_venue
from wechat.fake import FakeWeChatControl

ORDERS_PER_USER = 5
REDEEM_SHARE = 0.3
GATES = ("north", "south", "east")
SETTLE_TIMEOUT_S = 120
#: The answers the readiness check's probes expect (a login code and a card code that cannot exist).
DOCTOR_PROBE_ANSWERS = {("/sns/jscode2session", "40029"), ("/card/code/get", "40056")}


@dataclass
class Stage:
    name: str
    seconds: float
    count: int

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


@dataclass
class DemoReport:
    stages: list[Stage] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    final_states: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    funnel: dict[str, Any] = field(default_factory=dict)
    venue: VenueReport | None = None

    def timed(self, name: str, count: int, work: Callable[[], None]) -> None:
        started = time.perf_counter()
        work()
        self.stages.append(Stage(name, time.perf_counter() - started, count))


class Demo:
    def __init__(
        self,
        stack: Stack,
        admin_token: str,
        orders: int,
        *,
        misconfigured_card: bool = False,
        show_readiness: Callable[[dict[str, Any]], None] = lambda report: None,
    ) -> None:
        self.stack = stack
        self.orders = orders
        #: Start with a card an organiser got wrong (get_limit below the tickets a user holds,
        #: gifting on, audit not passed); the doctor shows it and the remedies are applied.
        self.misconfigured_card = misconfigured_card
        self.show_readiness = show_readiness
        self.admin = retrying(requests.Session())
        self.admin.headers["Authorization"] = f"Bearer {admin_token}"
        self.gate = self.admin
        self.fake = FakeWeChatControl(stack.fake_url)
        tag = uuid.uuid4().hex[:8]
        self.oa_appid, self.mp_appid = f"wxdemooa{tag}", f"wxdemomp{tag}"
        self.oa_secret, self.mp_secret = secrets.token_hex(16), secrets.token_hex(16)
        self.server_token = secrets.token_hex(8)
        self.aes_key = base64.b64encode(os.urandom(32)).decode().rstrip("=")
        self.users: list[dict[str, Any]] = []
        self.orders_of: dict[str, list[str]] = {}
        self.event_id = 0
        self.card_id = ""
        self.report = DemoReport()

    def _api(self, path: str) -> str:
        return self.stack.api_url + path

    # -- organiser -------------------------------------------------------------------------------

    def register_accounts(self) -> None:
        push_url = self._api(f"/wechat/{self.oa_appid}/events")
        self.fake.register_oa(
            self.oa_appid,
            self.oa_secret,
            self.server_token,
            encoding_aes_key=self.aes_key,
            push_url=push_url,
            safe_mode=True,
            original_id="gh_demo",
        )
        self.fake.register_mp(self.mp_appid, self.mp_secret, self.oa_appid)
        body: dict[str, Any] = {
            "app_secret": self.oa_secret,
            "server_token": self.server_token,
            "encoding_aes_key": self.aes_key,
            "safe_mode": True,
            "original_id": "gh_demo",
            "name": "Demo OA",
        }
        ok(self.admin.put(self._api(f"/v1/admin/official-accounts/{self.oa_appid}"), json=body))
        mp_body = {"app_secret": self.mp_secret, "official_account_appid": self.oa_appid, "name": "Demo MP"}
        ok(self.admin.put(self._api(f"/v1/admin/mini-programs/{self.mp_appid}"), json=mp_body))
        self.fake.verify_url(self.oa_appid)  # the organiser saves the server URL; WeChat checks it

    def create_event(self) -> None:
        now = int(time.time())
        card = {
            "card_type": "MEETING_TICKET",
            "meeting_detail": "Hall A, doors 19:00",
            "base_info": {
                "logo_url": "http://mmbiz.qpic.cn/mmbiz/demo/0",
                "brand_name": "cardpipe live",
                "title": "Demo Expo",
                "color": "Color010",
                "notice": "Show the QR code at the gate",
                "description": "One entry per ticket.",
                "date_info": {
                    "type": "DATE_TYPE_FIX_TIME_RANGE",
                    "begin_timestamp": now,
                    "end_timestamp": now + 86400 * 30,
                },
                "get_limit": 1 if self.misconfigured_card else 50,
                "can_give_friend": self.misconfigured_card,
            },
        }
        body: dict[str, Any] = {
            "name": "Demo Expo",
            "official_account_appid": self.oa_appid,
            "mini_program_appid": self.mp_appid,
            "card": card,
        }
        event = ok(self.admin.post(self._api("/v1/admin/events"), json=body))
        self.event_id, self.card_id = event["id"], event["card_id"]
        if not self.misconfigured_card:
            self.fake.review_card(self.card_id)

    def make_users_and_import(self) -> None:
        rows = io.StringIO()
        writer = csv.writer(rows)
        writer.writerow(["order_no", "openid", "unionid", "ticket_count"])
        users = max(1, self.orders // ORDERS_PER_USER)
        for index in range(users):
            person = self.fake.add_person(f"demo-{self.event_id}-{index}")
            self.users.append(person)
            numbers = [f"D{index:06d}-{n}" for n in range(ORDERS_PER_USER)][: self.orders - index * ORDERS_PER_USER]
            self.orders_of[person["name"]] = numbers
            for order_no in numbers:
                writer.writerow([order_no, person["openids"][self.mp_appid], person["unionid"] or "", 1])
        url = self._api(f"/v1/admin/events/{self.event_id}/orders")
        ok(self.admin.post(url, data=rows.getvalue().encode(), headers={"Content-Type": "text/csv"}))

    def preissue(self) -> None:
        ok(self.admin.post(self._api(f"/v1/admin/events/{self.event_id}/preissue")))
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < deadline:
            self.stack.check_alive()
            progress = ok(self.admin.get(self._api(f"/v1/admin/events/{self.event_id}/progress?by_state=false")))
            if progress["tickets_issued"] >= progress["tickets_total"] > 0:
                return
            time.sleep(0.2)
        raise RuntimeError("pre-issue did not finish")

    def doctor(self) -> bool:
        """The readiness check before launch; with a misconfigured card, the organiser's remedies
        (in the WeChat back office) and a second check. True when ready."""
        report = self._readiness()
        if not report["ready"] and self.misconfigured_card:
            self.fake.edit_card(self.card_id, get_limit=ORDERS_PER_USER, can_give_friend=False)
            self.fake.review_card(self.card_id)
            report = self._readiness()
        if not report["ready"]:
            failing = [item["key"] for item in report["items"] if item["status"] == "failing"]
            self.report.problems.append(f"the doctor says not ready: {', '.join(failing)}")
        return bool(report["ready"])

    def _readiness(self) -> dict[str, Any]:
        self.stack.check_alive()
        report = ok(self.admin.get(self._api(f"/v1/admin/events/{self.event_id}/readiness")))
        self.show_readiness(report)
        return dict(report)

    # -- users -----------------------------------------------------------------------------------

    def claim_all(self) -> None:
        buyers = Buyers(self._api, self.fake, self.mp_appid, self.orders_of, self.report.errors)
        buyers.claim_all(self.users, halfway=self.rotate_ticket)

    def rotate_ticket(self) -> None:
        """WeChat issues a new api_ticket and the old one dies at once (no grace): every payload
        still outstanding must be re-signed before it is served."""
        self.fake.rotate_ticket(self.oa_appid, grace_s=0)
        self.stack.run("credentials", "refresh", "--force", self.oa_appid)

    # -- gates and checks ------------------------------------------------------------------------

    def wait_until_claimed(self) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < deadline:
            self.stack.check_alive()
            states = self._ticket_states()
            if states.get("claimed", 0) == self.orders and self._both_signals() == self.orders:
                return
            time.sleep(0.5)
        self.report.problems.append(f"not every ticket claimed by both signals in time: {self._ticket_states()}")

    def redeem_share(self) -> None:
        codes = self._codes()[: int(self.orders * REDEEM_SHARE)]
        answers: Counter[str] = Counter()

        def redeem(code: str) -> None:
            body = {"code": code, "gate": GATES[hash(code) % len(GATES)], "nonce": uuid.uuid4().hex}
            answers[ok(self.gate.post(self._api("/v1/redemptions"), json=body))["result"]] += 1

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(redeem, codes))
        if answers["ok"] != len(codes):
            self.report.problems.append(f"redemptions answered {dict(answers)} for {len(codes)} fresh codes")
        again = {"code": codes[0], "gate": "north", "nonce": uuid.uuid4().hex}
        if ok(self.gate.post(self._api("/v1/redemptions"), json=again))["result"] != "already_redeemed":
            self.report.problems.append("a second scan of a redeemed code was not refused")

    def verify(self) -> None:
        expected_redeemed = int(self.orders * REDEEM_SHARE)
        states = self._ticket_states()
        self.report.final_states = states
        want = {"redeemed": expected_redeemed, "claimed": self.orders - expected_redeemed}
        if states != want:
            self.report.problems.append(f"final ticket states {states}, expected {want}")
        queues = ok(self.admin.get(self._api("/ops/queues")))["queues"]
        dead = {q["name"]: q["dead"] for q in queues if q["dead"]}
        if dead:
            self.report.problems.append(f"dead letters: {dead}")
        self.report.funnel = ok(self.admin.get(self._api(f"/v1/events/{self.event_id}/stats")))
        stats = self.fake.stats(self.oa_appid)
        for endpoint, codes in stats.get("errcodes", {}).items():
            for errcode, count in codes.items():
                if errcode != "0":
                    probe = " (the doctor's probe)" if (endpoint, errcode) in DOCTOR_PROBE_ANSWERS else ""
                    self.report.errors[f"WeChat {endpoint} errcode {errcode}{probe}"] += count

    def _db(self) -> Any:
        return create_engine(self.stack.env["DATABASE_URL"])

    def _ticket_states(self) -> dict[str, int]:
        engine = self._db()
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT state, count(*) FROM tickets WHERE event_id = :e GROUP BY state"), {"e": self.event_id}
            )
            result = {state: count for state, count in rows}
        engine.dispose()
        return result

    def _both_signals(self) -> int:
        engine = self._db()
        with engine.connect() as conn:
            count = conn.execute(
                text(
                    "SELECT count(*) FROM tickets WHERE event_id = :e AND confirmed_by_client AND confirmed_by_wechat"
                ),
                {"e": self.event_id},
            ).scalar_one()
        engine.dispose()
        return int(count)

    def _codes(self) -> list[str]:
        engine = self._db()
        with engine.connect() as conn:
            codes = list(
                conn.execute(
                    text("SELECT code FROM tickets WHERE event_id = :e AND state = 'claimed' ORDER BY id"),
                    {"e": self.event_id},
                ).scalars()
            )
        engine.dispose()
        return codes

    def _accounts_and_event(self) -> None:
        self.register_accounts()
        self.create_event()

    def run(self) -> DemoReport:
        report = self.report
        report.timed("accounts + event + card", 1, self._accounts_and_event)
        report.timed("users + order import", self.orders, self.make_users_and_import)
        report.timed("pre-issue", self.orders, self.preissue)
        if not self.doctor():
            return report
        report.timed("claims (login, poll, addCard, result)", self.orders, self.claim_all)
        report.timed("confirmations settled", self.orders, self.wait_until_claimed)
        report.timed("gate redemptions", int(self.orders * REDEEM_SHARE), self.redeem_share)
        self.verify()
        report.timed("venue: lists, re-entries, capacity, offline gate", HALL_VISITORS, self.venue)
        return report

    def venue(self) -> None:
        """After the checks above: the VIP list's entries redeem tickets the states check counts."""
        self.report.venue = run_venue(self, self._codes()[: HALL_VISITORS + OFFLINE_ENTRIES])
        self.report.problems.extend(self.report.venue.problems)
