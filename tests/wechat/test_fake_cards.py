"""The fake's card endpoints: creation rules, audit, stock, deposit and code states."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from wechat.errors import BusinessError, WeChatError
from wechat.fake import FakeWeChatControl

if TYPE_CHECKING:
    from tests.worlds import World


def _create_errcode(world: World, body: dict[str, Any]) -> int | None:
    with pytest.raises(WeChatError) as caught:
        world.api.card_create(body)
    return caught.value.errcode


def test_new_card_waits_for_audit(world: World, fake: FakeWeChatControl) -> None:
    card_id = world.create_card(approve=False, card_type="SCENIC_TICKET")
    assert len(card_id) == 28
    assert world.api.card_get(card_id)["scenic_ticket"]["base_info"]["status"] == "CARD_STATUS_NOT_VERIFY"
    fake.review_card(card_id)
    assert world.api.card_get(card_id)["scenic_ticket"]["base_info"]["status"] == "CARD_STATUS_VERIFY_OK"


def test_missing_required_fields(world: World) -> None:
    body = world.card_body()
    del body["card"]["meeting_ticket"]["base_info"]["notice"]
    assert _create_errcode(world, body) == 41011

    body = world.card_body()
    del body["card"]["meeting_ticket"]["meeting_detail"]
    assert _create_errcode(world, body) == 41011


def test_inner_key_must_be_the_lower_case_card_type(world: World) -> None:
    body = world.card_body()
    body["card"]["MEETING_TICKET"] = body["card"].pop("meeting_ticket")
    assert _create_errcode(world, body) == 41011


def test_byte_lengths_count_utf8(world: World) -> None:
    assert _create_errcode(world, world.card_body(title="十个汉字十个汉字十个")) == 45021
    world.create_card(title="九个汉字九个汉字九")


@pytest.mark.parametrize(
    ("options", "errcode"),
    [
        ({"code_type": "CODE_TYPE_LASER"}, 40097),
        ({"date_info": {"type": "DATE_TYPE_PERMANENT"}}, 40097),
        ({"date_info": {"type": "DATE_TYPE_FIX_TIME_RANGE", "begin_timestamp": 10, "end_timestamp": 5}}, 40079),
        ({"quantity": 0}, 40122),
        ({"deposit": True, "quantity": 5}, 40122),
        ({"deposit": True, "use_custom_code": False, "quantity": 0}, 40097),
    ],
)
def test_invalid_cards(world: World, options: dict[str, Any], errcode: int) -> None:
    assert _create_errcode(world, world.card_body(**options)) == errcode


def test_unsupported_card_type(world: World) -> None:
    body = world.card_body()
    body["card"] = {"card_type": "GROUPON", "groupon": body["card"]["meeting_ticket"]}
    assert _create_errcode(world, body) == 40071


def test_modify_stock(world: World) -> None:
    card_id = world.create_card(quantity=2)
    world.api.modify_stock(card_id, increase=3)
    world.api.modify_stock(card_id, reduce=4)
    assert world.api.card_get(card_id)["meeting_ticket"]["base_info"]["sku"]["quantity"] == 1
    with pytest.raises(BusinessError) as caught:
        world.api.modify_stock(card_id, reduce=2)
    assert caught.value.errcode == 40122


def test_deposit_rules(world: World) -> None:
    unaudited = world.create_card(approve=False, quantity=0, deposit=True)
    with pytest.raises(BusinessError) as not_audited:
        world.api.deposit_codes(unaudited, ["A1"])
    assert not_audited.value.errcode == 40078

    card_id = world.create_card(quantity=0, deposit=True)
    too_many = {"card_id": card_id, "code": [f"C{n}" for n in range(101)]}
    with pytest.raises(BusinessError) as over:
        world.http.post("/card/code/deposit", too_many, {"access_token": world.tokens.current()})
    assert over.value.errcode == 40109

    raw = world.http.post(
        "/card/code/deposit",
        {"card_id": card_id, "code": ["OK1", "OK1", "bad-code!", "OK2"]},
        {"access_token": world.tokens.current()},
    )
    assert (raw["succ_code"], raw["duplicate_code"], raw["fail_code"]) == (["OK1", "OK2"], ["OK1"], ["bad-code!"])


def test_code_lookup_errors(world: World) -> None:
    card_id = world.create_card()
    answer = world.add(card_id, world.ext(card_id, code="LOOK1"))
    assert answer["errMsg"] == "addCard:ok"

    for card, code, errcode in [(card_id, "NOPE", 40056), (None, "LOOK1", 41012)]:
        with pytest.raises(BusinessError) as caught:
            world.api.code_get(card, code)
        assert caught.value.errcode == errcode
    with pytest.raises(BusinessError) as bad_token:
        world.api.code_decrypt("AAAA" + answer["cardList"][0]["code"])
    assert bad_token.value.errcode == 40056


def test_cards_are_scoped_to_their_official_account(world: World, make_world: Any) -> None:
    card_id = world.create_card()
    other = make_world()
    with pytest.raises(BusinessError) as caught:
        other.api.card_get(card_id)
    assert caught.value.errcode == 45030


def test_generated_codes_need_no_card_id(world: World) -> None:
    card_id = world.create_card(use_custom_code=False)
    answer = world.add(card_id, world.ext(card_id))
    code = world.api.code_decrypt(answer["cardList"][0]["code"])
    assert code.isdigit() and len(code) == 12
    assert world.api.code_get(None, code).card_id == card_id
    assert world.api.code_consume(None, code).card_id == card_id


def test_expired_card(world: World, fake: FakeWeChatControl) -> None:
    card_id = world.create_card()
    answer = world.add(card_id, world.ext(card_id, code="LATE1"))
    code = world.api.code_decrypt(answer["cardList"][0]["code"])
    fake.advance_clock(91 * 86400)
    info = world.api.code_get(card_id, code, check_consume=False)
    assert (info.user_card_status, info.can_consume) == ("EXPIRE", False)
    with pytest.raises(BusinessError) as caught:
        world.api.code_consume(card_id, code)
    assert caught.value.errcode == 40127
