"""The client: token source, the refresh-once rule, result parsing, hidden secrets, and the card
API end to end against the fake."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from wechat.client import (
    AccessToken,
    ApiTicket,
    CardApi,
    DepositResult,
    FetchingTokenSource,
    MiniProgramSession,
    TokenSource,
    fetch_access_token,
    fetch_stable_token,
    parse_deposit_result,
)
from wechat.errors import BusinessError, ConfigurationError, TokenInvalidError
from wechat.fake import FakeWeChatControl

if TYPE_CHECKING:
    from tests.worlds import World


class _Counter:
    def __init__(self, expires_in: int = 7200) -> None:
        self.fetches = 0
        self.expires_in = expires_in
        self.lock = threading.Lock()

    def __call__(self) -> AccessToken:
        with self.lock:
            self.fetches += 1
            return AccessToken(f"token-{self.fetches}", self.expires_in)


def test_fetching_token_source_caches_and_refreshes_before_expiry() -> None:
    now = [1000.0]
    fetch = _Counter(expires_in=7200)
    source = FetchingTokenSource(fetch, margin_s=900, clock=lambda: now[0])
    assert isinstance(source, TokenSource)

    assert source.current() == "token-1"
    now[0] += 7200 - 901
    assert source.current() == "token-1"
    now[0] += 2
    assert source.current() == "token-2"
    assert fetch.fetches == 2


def test_margin_never_exceeds_half_the_lifetime() -> None:
    now = [0.0]
    source = FetchingTokenSource(_Counter(expires_in=10), margin_s=900, clock=lambda: now[0])
    assert source.current() == "token-1"
    now[0] = 4.9
    assert source.current() == "token-1"
    now[0] = 5.0
    assert source.current() == "token-2"


def test_invalidate_is_compare_and_expire() -> None:
    fetch = _Counter()
    source = FetchingTokenSource(fetch)
    first = source.current()
    source.invalidate(first)
    second = source.current()
    assert second != first

    source.invalidate(first)  # a late report about the old token must not drop the new one
    assert source.current() == second
    assert fetch.fetches == 2


def test_concurrent_callers_share_one_fetch() -> None:
    fetch = _Counter()
    source = FetchingTokenSource(fetch)
    seen: list[str] = []
    threads = [threading.Thread(target=lambda: seen.append(source.current())) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(seen) == {"token-1"}
    assert fetch.fetches == 1


def _fetches(fake: FakeWeChatControl, appid: str) -> int:
    return int(fake.stats()["token_fetches"].get(appid, 0))


def test_stale_token_is_refreshed_once_and_the_call_retried_once(world: World, fake: FakeWeChatControl) -> None:
    card_id = world.create_card()
    assert _fetches(fake, world.oa_appid) == 1
    fake.invalidate_tokens(world.oa_appid)

    assert world.api.card_get(card_id)["card_type"] == "MEETING_TICKET"

    stats = fake.stats()
    assert stats["token_fetches"][world.oa_appid] == 2
    assert stats["calls_by_appid"][world.oa_appid]["/card/get"] == 2
    assert stats["errcodes"]["/card/get"]["40001"] >= 1


def test_token_error_after_the_refresh_is_raised_without_looping(world: World, fake: FakeWeChatControl) -> None:
    card_id = world.create_card()
    fake.inject_errcode("/card/get", 40001, appid=world.oa_appid)

    with pytest.raises(TokenInvalidError):
        world.api.card_get(card_id)

    stats = fake.stats()
    assert stats["calls_by_appid"][world.oa_appid]["/card/get"] == 2
    assert stats["token_fetches"][world.oa_appid] == 2


def test_expired_token_42001_takes_the_same_path(world: World, fake: FakeWeChatControl) -> None:
    card_id = world.create_card()
    fake.inject_errcode("/card/get", 42001, count=1, appid=world.oa_appid)
    world.api.card_get(card_id)
    assert _fetches(fake, world.oa_appid) == 2


def test_mp_token_on_a_card_api_is_a_configuration_error(world: World) -> None:
    mp_tokens = FetchingTokenSource(lambda: fetch_access_token(world.http, world.mp_appid, world.mp_secret))

    with pytest.raises(ConfigurationError) as caught:
        CardApi(world.http, mp_tokens).fetch_card_ticket()

    assert caught.value.errcode == 48001


def test_secret_values_are_hidden_from_repr() -> None:
    assert "s3cr3t" not in repr(AccessToken("s3cr3t", 7200))
    assert "s3cr3t" not in repr(ApiTicket("s3cr3t", 7200))
    session = MiniProgramSession("openid-1", "s3cr3t", "union-1")
    assert "s3cr3t" not in repr(session)
    assert "openid-1" in repr(session)


def test_deposit_result_parses_lists() -> None:
    result = parse_deposit_result({"errcode": 0, "succ_code": ["a1", "a2"], "duplicate_code": ["a3"], "fail_code": []})
    assert result == DepositResult(2, 1, 0, ("a1", "a2"), ("a3",), ())


def test_deposit_result_parses_counts() -> None:
    result = parse_deposit_result({"errcode": 0, "succ_code": 3, "duplicate_code": "1", "fail_code": 0})
    assert result == DepositResult(3, 1, 0)
    assert result.succ_codes is None


def test_batches_are_limited_to_100_codes(world: World) -> None:
    with pytest.raises(ValueError):
        world.api.deposit_codes("pcard", [str(n) for n in range(101)])
    with pytest.raises(ValueError):
        world.api.check_codes("pcard", [])
    with pytest.raises(TypeError):
        world.api.deposit_codes("pcard", "12345")


def test_custom_code_ticket_end_to_end(world: World, fake: FakeWeChatControl) -> None:
    card_id = world.create_card(quantity=3)
    answer = world.add(card_id, world.ext(card_id, code="SEAT0001", outer_str="order-17"))
    assert answer["errMsg"] == "addCard:ok"

    code = world.api.code_decrypt(answer["cardList"][0]["code"])
    info = world.api.code_get(card_id, code)
    assert (info.code, info.can_consume, info.user_card_status, info.outer_str) == (
        "SEAT0001",
        True,
        "NORMAL",
        "order-17",
    )
    assert info.openid == world.oa_openid()
    assert info.begin_time is not None and info.end_time is not None and info.end_time > info.begin_time

    consumed = world.api.code_consume(card_id, code)
    assert (consumed.card_id, consumed.openid) == (card_id, world.oa_openid())
    assert world.api.code_get(card_id, code, check_consume=False).user_card_status == "CONSUMED"
    with pytest.raises(BusinessError) as again:
        world.api.code_consume(card_id, code)
    assert again.value.errcode == 40099
    assert world.api.card_get(card_id)["meeting_ticket"]["base_info"]["sku"]["quantity"] == 2


def test_deposit_card_end_to_end(world: World) -> None:
    card_id = world.create_card(quantity=0, deposit=True)
    codes = [f"DEP{n:04d}" for n in range(5)]

    first = world.api.deposit_codes(card_id, codes[:3])
    again = world.api.deposit_codes(card_id, codes)
    assert first.succ_codes == tuple(codes[:3])
    assert (again.succ_count, again.duplicate_count, again.fail_count) == (2, 3, 0)
    assert world.api.deposit_count(card_id) == 5
    checked = world.api.check_codes(card_id, ["DEP0001", "NOPE"])
    assert (checked.exist, checked.not_exist) == (("DEP0001",), ("NOPE",))

    with pytest.raises(BusinessError) as too_many:
        world.api.modify_stock(card_id, increase=6)
    assert too_many.value.errcode == 40122
    world.api.modify_stock(card_id, increase=5)
    world.api.modify_stock(card_id, reduce=1)

    answer = world.add(card_id, world.ext(card_id))
    assert answer["errMsg"] == "addCard:ok"
    assert world.api.code_decrypt(answer["cardList"][0]["code"]) in codes


def test_unavailable_then_code_get(world: World) -> None:
    card_id = world.create_card()
    answer = world.add(card_id, world.ext(card_id, code="REFUND1"))
    code = world.api.code_decrypt(answer["cardList"][0]["code"])

    world.api.code_unavailable(card_id, code, reason="refund")

    with pytest.raises(BusinessError) as caught:
        world.api.code_get(card_id, code)
    assert caught.value.errcode == 40127
    assert world.api.code_get(card_id, code, check_consume=False).user_card_status == "UNAVAILABLE"


def test_jscode2session_returns_the_mp_openid_and_the_shared_unionid(world: World, fake: FakeWeChatControl) -> None:
    js_code = fake.login(world.person, world.mp_appid)
    session = world.mp.jscode2session(world.mp_appid, world.mp_secret, js_code)

    person = fake.person(world.person)
    assert session.openid == person["openids"][world.mp_appid]
    assert session.openid != world.oa_openid()
    assert session.unionid == person["unionid"]
    assert session.session_key


def test_jscode2session_errors(world: World, fake: FakeWeChatControl) -> None:
    js_code = fake.login(world.person, world.mp_appid)
    with pytest.raises(ConfigurationError) as bad_secret:
        world.mp.jscode2session(world.mp_appid, world.oa_secret, js_code)
    assert bad_secret.value.errcode == 40125
    with pytest.raises(ConfigurationError) as not_an_mp:
        world.mp.jscode2session(world.oa_appid, world.oa_secret, js_code)
    assert not_an_mp.value.errcode == 40013

    world.mp.jscode2session(world.mp_appid, world.mp_secret, js_code)
    with pytest.raises(BusinessError) as reused:
        world.mp.jscode2session(world.mp_appid, world.mp_secret, js_code)
    assert reused.value.errcode == 40029

    stale = fake.login(world.person, world.mp_appid)
    fake.advance_clock(301)
    with pytest.raises(BusinessError) as expired:
        world.mp.jscode2session(world.mp_appid, world.mp_secret, stale)
    assert expired.value.errcode == 40029


def test_stable_token_fetch(world: World) -> None:
    first = fetch_stable_token(world.http, world.oa_appid, world.oa_secret)
    assert fetch_stable_token(world.http, world.oa_appid, world.oa_secret).value == first.value
    forced = fetch_stable_token(world.http, world.oa_appid, world.oa_secret, force_refresh=True)
    assert forced.value != first.value
