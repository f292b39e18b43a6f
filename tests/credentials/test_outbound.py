"""The outbound guard on the real Redis, PostgreSQL and fake WeChat: the shared per-account rate
limit, 45009 blocking with probes, 45011 pauses, and the deferral each refusal asks for."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest
from sqlalchemy import select

from cardpipe.db import get_sessionmaker, session_scope
from cardpipe.outbound import (
    AccountBlocked,
    MinuteQuotaPause,
    OutboundGuard,
    RateLimited,
    deferral_ms,
    next_beijing_midnight,
)
from cardpipe.runtime import credential_store, redis_client
from models import OfficialAccount
from tests.credentials.conftest import Override, Shop, calls
from tests.worlds import World
from wechat.errors import BusinessError, DailyQuotaError, MinuteQuotaError, RetryableError
from wechat.fake import FakeWeChatControl


def _blocked_in_db(appid: str) -> tuple[datetime | None, str | None]:
    with session_scope() as session:
        row = session.execute(
            select(OfficialAccount.quota_blocked_until, OfficialAccount.quota_reason).where(
                OfficialAccount.appid == appid
            )
        ).one()
    return row.quota_blocked_until, row.quota_reason


def test_the_calls_per_second_limit_is_shared_by_every_guard(cardpipe_world: World, redis_url: str) -> None:
    # Given two guards, as two worker processes would have, limited to 5 calls/s per account
    guards = [
        OutboundGuard(redis_client(), get_sessionmaker(), calls_per_s=5, rate_wait_s=10, probe_interval_s=60)
        for _ in range(2)
    ]
    sent_at: list[float] = []
    lock = threading.Lock()

    def send() -> None:
        with lock:
            sent_at.append(time.time())

    # When eight threads make 24 calls between them
    def caller(guard: OutboundGuard) -> None:
        for _ in range(3):
            guard.call(cardpipe_world.oa_appid, "/card/get", send)

    threads = [threading.Thread(target=caller, args=(guards[i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then none was lost, and they took five one-second buckets (5 + 5 + 5 + 5 + 4): at least
    # three whole seconds passed between the first and the last
    assert len(sent_at) == 24
    assert len({int(t) for t in sent_at}) >= 5
    assert max(sent_at) - min(sent_at) >= 3.0


def test_a_caller_that_finds_no_slot_in_time_is_deferred_to_the_next_second(
    cardpipe_world: World, redis_url: str
) -> None:
    guard = OutboundGuard(redis_client(), get_sessionmaker(), calls_per_s=1, rate_wait_s=0, probe_interval_s=60)
    guard.call(cardpipe_world.oa_appid, "/card/get", lambda: None)
    with pytest.raises(RateLimited) as refused:
        guard.call(cardpipe_world.oa_appid, "/card/get", lambda: pytest.fail("sent over the limit"))
    assert refused.value.retry_at > time.time()
    assert guard.status(cardpipe_world.oa_appid).counters["rate_limited"] == 1


def test_45009_blocks_the_account_until_a_probe_finds_the_quota_back(
    shop: Shop, fake: FakeWeChatControl, override_settings: Override
) -> None:
    override_settings(quota_probe_interval_s=0.5)
    appid = shop.appid
    api = credential_store().card_api(appid)
    fake.inject_errcode("/card/get", 45009, appid=appid)

    # The first 45009 blocks the account, durably and visibly
    with pytest.raises(AccountBlocked) as blocked:
        api.card_get(shop.card_id)
    assert isinstance(blocked.value, DailyQuotaError)
    until, reason = _blocked_in_db(appid)
    assert until is not None and until.timestamp() == next_beijing_midnight(time.time())
    assert reason is not None and "45009" in reason and "/card/get" in reason
    status = credential_store().guard.status(appid)
    assert status.blocked and status.reason == reason

    # While blocked nothing is sent: callers are refused with the time of the next probe
    sent = calls(fake, appid, "/card/get")
    with pytest.raises(AccountBlocked) as refused:
        api.card_get(shop.card_id)
    assert calls(fake, appid, "/card/get") == sent
    assert 0 < refused.value.retry_at - time.time() <= 0.5

    # A probe that still meets 45009 keeps the block
    time.sleep(0.6)
    with pytest.raises(AccountBlocked):
        api.card_get(shop.card_id)
    assert calls(fake, appid, "/card/get") == sent + 1
    assert credential_store().guard.status(appid).blocked

    # Once the quota is back, the next probe succeeds and ends the block
    fake.clear_faults()
    time.sleep(0.6)
    assert api.card_get(shop.card_id)["card_type"] == "MEETING_TICKET"
    assert not credential_store().guard.status(appid).blocked
    assert _blocked_in_db(appid) == (None, None)
    api.card_get(shop.card_id)
    counters = credential_store().guard.status(appid).counters
    assert counters["daily_quota"] == 2
    assert counters["quota_probes"] == 2
    assert counters["refused"] == 1


def test_a_probe_answered_with_any_other_refusal_still_ends_the_block(
    shop: Shop, fake: FakeWeChatControl, override_settings: Override
) -> None:
    override_settings(quota_probe_interval_s=0.2)
    api = credential_store().card_api(shop.appid)
    fake.inject_errcode("/card/code/get", 45009, appid=shop.appid, count=1)
    with pytest.raises(AccountBlocked):
        api.code_get(shop.card_id, "NOSUCHCODE")
    time.sleep(0.3)
    with pytest.raises(BusinessError) as answer:
        api.code_get(shop.card_id, "NOSUCHCODE")
    assert answer.value.errcode == 40056
    assert not credential_store().guard.status(shop.appid).blocked


def test_45011_pauses_the_account_until_the_next_minute(shop: Shop, fake: FakeWeChatControl) -> None:
    api = credential_store().card_api(shop.appid)
    fake.inject_errcode("/card/get", 45011, appid=shop.appid, count=1)
    with pytest.raises(MinuteQuotaPause) as paused:
        api.card_get(shop.card_id)
    assert paused.value.retry_at == (int(time.time()) // 60 + 1) * 60
    sent = calls(fake, shop.appid, "/card/get")
    with pytest.raises(MinuteQuotaPause):
        api.card_get(shop.card_id)
    assert calls(fake, shop.appid, "/card/get") == sent
    status = credential_store().guard.status(shop.appid)
    assert status.minute_pause_s is not None and 0 < status.minute_pause_s <= 60
    assert status.counters["minute_quota"] == 1


def test_busy_and_transport_errors_are_counted_and_left_to_the_retry_policy(
    shop: Shop, fake: FakeWeChatControl
) -> None:
    api = credential_store().card_api(shop.appid)
    fake.inject_errcode("/card/get", -1, appid=shop.appid)
    with pytest.raises(RetryableError):
        api.card_get(shop.card_id)
    assert credential_store().guard.status(shop.appid).counters["busy"] == 1
    assert not credential_store().guard.status(shop.appid).blocked


def test_deferrals_wait_for_what_each_refusal_names_plus_jitter() -> None:
    now = 1_000_020.0  # on a minute boundary
    blocked = AccountBlocked("wxa", "45009", now + 300)
    earliest, latest = deferral_ms(blocked, now=now, rand=lambda: 0.0), deferral_ms(blocked, now=now, rand=lambda: 1.0)
    assert earliest is not None and earliest >= 300_000
    assert latest is not None and latest <= 305_000
    assert deferral_ms(MinuteQuotaPause("wxa", now + 20), now=now, rand=lambda: 0.0) == 20_000
    assert deferral_ms(RateLimited("wxa", now + 0.5), now=now, rand=lambda: 0.0) == 500
    # 45011 met outside the guard (the mini program login): until the next minute
    assert deferral_ms(MinuteQuotaError(45011, "slow down"), now=now + 15, rand=lambda: 0.0) == 45_000
    # Everything else keeps dramatiq's ordinary backoff
    assert deferral_ms(RetryableError(-1, "busy"), now=now) is None
    assert deferral_ms(BusinessError(40056, "invalid code"), now=now) is None
    assert deferral_ms(ValueError("bug"), now=now) is None
