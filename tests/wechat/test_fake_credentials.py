"""The fake's access_token, stable_token and wx_card ticket lifecycles, envelope, quotas."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import requests

from wechat.client import fetch_access_token, fetch_stable_token
from wechat.errors import ConfigurationError, DailyQuotaError, MinuteQuotaError, TokenInvalidError, WeChatError
from wechat.fake import FakeWeChatControl

if TYPE_CHECKING:
    from tests.worlds import World


def _ticket_with(world: World, token: str) -> dict[str, Any]:
    return world.http.get("/cgi-bin/ticket/getticket", {"access_token": token, "type": "wx_card"})


def _errcode(call: Any) -> int | None:
    with pytest.raises(WeChatError) as caught:
        call()
    return caught.value.errcode


def test_envelope_is_http_200_with_a_rid(world: World) -> None:
    response = requests.get(
        f"{world.base_url}/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": "wxnobody", "secret": "x"},
        timeout=5,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["errcode"] == 40013
    assert " rid: " in body["errmsg"]

    ok = requests.get(
        f"{world.base_url}/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": world.oa_appid, "secret": world.oa_secret},
        timeout=5,
    ).json()
    assert "errcode" not in ok
    assert ok["expires_in"] == 7200
    assert len(ok["access_token"]) >= 100


def test_wrong_method_and_unknown_url(world: World) -> None:
    assert requests.get(f"{world.base_url}/card/create", timeout=5).json()["errcode"] == 43002
    assert requests.post(f"{world.base_url}/cgi-bin/token", timeout=5).json()["errcode"] == 43001
    assert requests.get(f"{world.base_url}/sns/jsCode2Session", timeout=5).json()["errcode"] == 40066


def test_credential_errors(world: World) -> None:
    with pytest.raises(ConfigurationError) as bad_secret:
        fetch_access_token(world.http, world.oa_appid, "wrong")
    assert bad_secret.value.errcode == 40001  # on the token endpoint 40001 is a wrong AppSecret
    assert _errcode(lambda: fetch_access_token(world.http, "wxunknown", "x")) == 40013
    assert _errcode(lambda: world.http.get("/cgi-bin/ticket/getticket", {"type": "wx_card"})) == 41001
    assert _errcode(lambda: _ticket_with(world, "not-a-token")) == 40001


def test_each_token_call_supersedes_the_previous_after_300_s(world: World, fake: FakeWeChatControl) -> None:
    first = fetch_access_token(world.http, world.oa_appid, world.oa_secret).value
    second = fetch_access_token(world.http, world.oa_appid, world.oa_secret).value
    assert first != second
    _ticket_with(world, first)  # both valid during the hand-over

    fake.advance_clock(301)
    with pytest.raises(TokenInvalidError) as superseded:
        _ticket_with(world, first)
    assert superseded.value.errcode == 40001
    _ticket_with(world, second)

    fake.advance_clock(7200)
    with pytest.raises(TokenInvalidError) as expired:
        _ticket_with(world, second)
    assert expired.value.errcode == 42001


def test_forced_invalidation(world: World, fake: FakeWeChatControl) -> None:
    token = fetch_access_token(world.http, world.oa_appid, world.oa_secret).value
    assert fake.invalidate_tokens(world.oa_appid) == 1
    assert _errcode(lambda: _ticket_with(world, token)) == 40001


def test_stable_token_semantics(world: World, fake: FakeWeChatControl) -> None:
    stable = fetch_stable_token(world.http, world.oa_appid, world.oa_secret)
    again = fetch_stable_token(world.http, world.oa_appid, world.oa_secret)
    assert again.value == stable.value
    assert again.expires_in <= stable.expires_in

    fetch_access_token(world.http, world.oa_appid, world.oa_secret)  # isolated: no effect
    fetch_access_token(world.http, world.oa_appid, world.oa_secret)
    fake.advance_clock(301)
    _ticket_with(world, stable.value)

    forced = fetch_stable_token(world.http, world.oa_appid, world.oa_secret, force_refresh=True)
    assert forced.value != stable.value
    assert _errcode(lambda: _ticket_with(world, stable.value)) == 40001
    with pytest.raises(MinuteQuotaError):
        fetch_stable_token(world.http, world.oa_appid, world.oa_secret, force_refresh=True)

    fake.advance_clock(7200 - 200)  # inside the last 5 minutes of ``forced``
    renewed = fetch_stable_token(world.http, world.oa_appid, world.oa_secret)
    assert renewed.value != forced.value
    assert renewed.expires_in >= 300
    _ticket_with(world, forced.value)  # old and new overlap


def test_ticket_is_stable_while_valid_and_renewed_after_expiry(world: World, fake: FakeWeChatControl) -> None:
    first = world.api.fetch_card_ticket()
    fake.advance_clock(100)
    same = world.api.fetch_card_ticket()
    assert same.value == first.value
    assert same.expires_in == first.expires_in - 100

    fake.advance_clock(7200)
    renewed = world.api.fetch_card_ticket()
    assert renewed.value != first.value
    assert renewed.expires_in == 7200


def test_ticket_types(world: World) -> None:
    token = world.tokens.current()
    card = world.api.fetch_card_ticket().value
    jsapi = world.http.get("/cgi-bin/ticket/getticket", {"access_token": token, "type": "jsapi"})["ticket"]
    assert jsapi != card
    assert _errcode(lambda: world.http.get("/cgi-bin/ticket/getticket", {"access_token": token, "type": "x"})) == 40097


def test_daily_quota_and_reset(world: World, fake: FakeWeChatControl) -> None:
    fake.set_quota(world.oa_appid, "/cgi-bin/token", 2)
    fetch_access_token(world.http, world.oa_appid, world.oa_secret)
    fetch_access_token(world.http, world.oa_appid, world.oa_secret)
    with pytest.raises(DailyQuotaError):
        fetch_access_token(world.http, world.oa_appid, world.oa_secret)
    assert fake.stats()["quotas"][world.oa_appid]["/cgi-bin/token"] == {"used": 2, "limit": 2}

    fake.reset_quota(world.oa_appid)
    fetch_access_token(world.http, world.oa_appid, world.oa_secret)


def test_clear_quota_endpoint(world: World, fake: FakeWeChatControl) -> None:
    fake.set_quota(world.oa_appid, "/card/create", 1)
    world.create_card()
    with pytest.raises(DailyQuotaError):
        world.create_card()
    world.http.post("/cgi-bin/clear_quota", {"appid": world.oa_appid}, {"access_token": world.tokens.current()})
    world.create_card()


def test_fault_rules_respect_rate_count_and_appid(world: World, fake: FakeWeChatControl) -> None:
    fake.inject_errcode("/cgi-bin/token", 45009, count=1, appid=world.oa_appid)
    fake.inject_errcode("/cgi-bin/token", 45009, appid="wxsomeoneelse")
    fake.inject_errcode("/cgi-bin/token", -1, rate=0.0)
    with pytest.raises(DailyQuotaError):
        fetch_access_token(world.http, world.oa_appid, world.oa_secret)
    fetch_access_token(world.http, world.oa_appid, world.oa_secret)
    assert fake.stats()["errcodes"]["/cgi-bin/token"]["45009"] >= 1
    assert len(fake.faults()["errcodes"]) == 3
