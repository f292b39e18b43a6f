"""Clients' 签名错误 reports force one card-ticket refresh per cooldown, and the refresh picks up
a ticket WeChat replaced without notice."""

from __future__ import annotations

import pytest
import redis

from cardpipe.credentials import stats_key
from cardpipe.runtime import credential_store
from cardpipe.services.signature_reports import is_signature_failure, report_signature_failure
from tests.worlds import World
from wechat.fake import FakeWeChatControl
from workers.credentials import refresh_card_ticket_now


@pytest.mark.parametrize(
    ("err_msg", "expected"),
    [
        ("addCard:fail 签名错误", True),
        ("addCard:fail invalid signature", True),
        ("addCard:fail cancel", False),
        ("addCard:fail 已领完", False),
    ],
)
def test_which_failures_are_signature_failures(err_msg: str, expected: bool) -> None:
    assert is_signature_failure(err_msg) is expected


def test_a_burst_of_reports_asks_for_one_refresh(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    answers = [report_signature_failure(client, "wxoasigreport") for _ in range(5)]
    assert answers == [True, False, False, False, False]
    assert int(client.hget(stats_key("wxoasigreport"), "client_signature_failures") or 0) == 5


def test_forced_refresh_picks_up_a_silently_replaced_ticket(cardpipe_world: World, fake: FakeWeChatControl) -> None:
    store = credential_store()
    before = store.card_ticket(cardpipe_world.oa_appid)
    fresh = fake.rotate_ticket(cardpipe_world.oa_appid, grace_s=0)
    assert store.card_ticket(cardpipe_world.oa_appid).value == before.value  # nothing told us
    refresh_card_ticket_now.fn(cardpipe_world.oa_appid)
    after = store.card_ticket(cardpipe_world.oa_appid)
    assert (after.value, after.version) == (fresh, before.version + 1)
