"""The fake's go-live failure knobs: the IP whitelist of the token endpoints (40164 naming the
caller's address, as WeChat words it), the card feature (48001) and custom-code permission
(43009), and the organiser's edits of a card in the back office."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from wechat.client import fetch_access_token, fetch_stable_token
from wechat.errors import BusinessError, ConfigurationError
from wechat.fake import FakeWeChatControl
from wechat.fake.control_client import FakeControlError

if TYPE_CHECKING:
    from tests.worlds import World


def test_the_ip_whitelist_refuses_other_addresses_with_the_address(world: World, fake: FakeWeChatControl) -> None:
    fake.set_ip_whitelist(world.oa_appid, ["203.0.113.7"])
    for fetch in (fetch_access_token, fetch_stable_token):
        with pytest.raises(ConfigurationError) as refused:
            fetch(world.http, world.oa_appid, world.oa_secret)
        assert refused.value.errcode == 40164
        assert refused.value.errmsg.startswith("invalid ip 127.0.0.1 ipv6 ::ffff:127.0.0.1, not in whitelist rid: ")
    # The Mini Program's login is not behind the OA's whitelist.
    code = fake.login(world.person, world.mp_appid)
    assert world.mp.jscode2session(world.mp_appid, world.mp_secret, code).openid
    fake.register_oa(world.oa_appid, world.oa_secret, world.server_token, original_id=world.original_id)
    with pytest.raises(ConfigurationError):
        fetch_access_token(world.http, world.oa_appid, world.oa_secret)  # the setting survives re-registering
    fake.set_ip_whitelist(world.oa_appid, ["203.0.113.7", "127.0.0.1"])
    assert fetch_access_token(world.http, world.oa_appid, world.oa_secret).value
    fake.set_ip_whitelist(world.oa_appid, None)
    assert fetch_access_token(world.http, world.oa_appid, world.oa_secret).value


def test_without_the_card_feature_the_card_api_is_unauthorized(world: World, fake: FakeWeChatControl) -> None:
    card_id = world.create_card()
    fake.set_card_permissions(world.oa_appid, card_feature=False)
    with pytest.raises(ConfigurationError) as refused:
        world.api.card_get(card_id)
    assert refused.value.errcode == 48001
    with pytest.raises(ConfigurationError):
        world.api.fetch_card_ticket()
    fake.set_card_permissions(world.oa_appid, card_feature=True)
    assert world.api.card_get(card_id)["card_type"] == "MEETING_TICKET"


def test_without_custom_code_permission(world: World, fake: FakeWeChatControl) -> None:
    card_id = world.create_card()
    fake.set_card_permissions(world.oa_appid, custom_code=False)
    with pytest.raises(BusinessError) as refused:
        world.api.card_create(world.card_body())
    assert refused.value.errcode == 43009
    with pytest.raises(BusinessError) as probe:
        world.api.code_get(card_id, "NOSUCHCODE", check_consume=False)
    assert probe.value.errcode == 43009
    assert world.api.card_create(world.card_body(use_custom_code=False))
    fake.set_card_permissions(world.oa_appid, custom_code=True)
    with pytest.raises(BusinessError) as unknown:
        world.api.code_get(card_id, "NOSUCHCODE", check_consume=False)
    assert unknown.value.errcode == 40056


def test_editing_a_card_changes_what_card_get_and_add_card_see(world: World, fake: FakeWeChatControl) -> None:
    card_id = world.create_card(get_limit=1)
    assert world.add(card_id, world.ext(card_id, code="EDIT0001"))["errMsg"] == "addCard:ok"
    assert "45033" in str(world.add(card_id, world.ext(card_id, code="EDIT0002"))["errcode"])
    edited = fake.edit_card(card_id, get_limit=3, can_give_friend=False)
    assert edited["meeting_ticket"]["base_info"]["get_limit"] == 3
    assert world.api.card_get(card_id)["meeting_ticket"]["base_info"]["get_limit"] == 3
    assert world.add(card_id, world.ext(card_id, code="EDIT0003"))["errMsg"] == "addCard:ok"
    with pytest.raises(FakeControlError) as frozen:
        fake.edit_card(card_id, use_custom_code=False)
    assert frozen.value.status == 400
    with pytest.raises(FakeControlError) as invalid:
        fake.edit_card(card_id, title="x" * 40)
    assert invalid.value.status == 409
