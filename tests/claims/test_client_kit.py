"""The Mini Program kit's claim logic (miniprogram/claim-logic.js), run by node's test runner
against the live api, workers and the fake WeChat through a ``wx`` shim: the same file the Mini
Program requires."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cardpipe.db import session_scope
from models import Order
from tests.backing_services import in_ci
from tests.claims.conftest import Buyer, Launch
from tests.waiting import wait_until
from wechat.fake import FakeWeChatServer

KIT = Path(__file__).resolve().parents[2] / "miniprogram"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        message = "node not found: install Node.js 20+ to run the Mini Program kit's tests"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return node


def _another_order(launch: Launch, buyer: Buyer, suffix: str) -> Buyer:
    with session_scope() as session:
        order = Order(
            event_id=launch.event_id, order_no=f"{buyer.order_no}{suffix}", mp_openid=buyer.mp_openid, ticket_count=1
        )
        session.add(order)
        session.flush()
        another = Buyer(buyer.person, buyer.mp_openid, order.order_no, order.id)
    launch.issue([another.order_id])
    return another


def test_claim_logic_claims_retries_after_cancel_batches_opens_and_hides_others_orders(
    launch: Launch, fake_server: FakeWeChatServer
) -> None:
    node = _node()
    buyer = launch.buyer()
    cancelling = _another_order(launch, buyer, "-2")
    batch = [_another_order(launch, buyer, f"-{n}") for n in (3, 4)]
    other = launch.buyer()
    env = {
        **os.environ,
        "CARDPIPE_API": launch.api,
        "CARDPIPE_FAKE": fake_server.url,
        "MP_APPID": launch.world.mp_appid,
        "PERSON": buyer.person,
        "OTHER_PERSON": other.person,
        "ORDER_NO": buyer.order_no,
        "CANCEL_ORDER_NO": cancelling.order_no,
        "BATCH_ORDER_NOS": ",".join(order.order_no for order in batch),
        "OTHER_ORDER_NO": other.order_no,
    }
    result = subprocess.run([node, "--test", "test/"], cwd=KIT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    claimed = [buyer, cancelling, *batch]
    wait_until(lambda: all(launch.settled(order) for order in claimed), what="every claimed order confirmed")
