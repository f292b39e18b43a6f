"""The simulated wx.addCard: what WeChat accepts and refuses in a cardExt (protocol page §5)."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from wechat.fake import FakeWeChatControl
from wechat.fake.addcard import expected_signature
from wechat.signing import sha1_signature

if TYPE_CHECKING:
    from tests.worlds import World


def _reason(answer: dict[str, Any]) -> str:
    assert answer["errMsg"].startswith("addCard:fail"), answer
    return str(answer["_fake"]["reason"])


def _hand_made(ticket: str, card_id: str, signed: dict[str, str], extra: dict[str, Any] | None = None) -> str:
    """A cardExt carrying ``signed`` (signed) plus ``extra`` (present but not signed)."""
    ext: dict[str, Any] = {**signed, **(extra or {})}
    ext["signature"] = sha1_signature([ticket, card_id, *signed.values()])
    return json.dumps(ext)


def test_correct_card_ext_is_accepted(world: World, fake: FakeWeChatControl) -> None:
    card_id = world.create_card()
    answer = world.add(card_id, world.ext(card_id, code="GOOD0001", outer_str="ch-1"))

    assert answer["errMsg"] == "addCard:ok"
    (item,) = answer["cardList"]
    assert item["cardId"] == card_id
    assert item["isSuccess"] is True
    assert item["code"] != "GOOD0001"
    assert answer["_fake"]["tickets"] == ["current"]
    assert fake.card(card_id)["stock"] == 9


def test_the_fakes_own_check_matches_the_official_vector() -> None:
    ext = {"code": "1434008071", "timestamp": 1404896688, "nonce_str": "123", "outer_str": "not signed"}
    assert expected_signature("ojZ8YtyVyr30HheH3CM73y7h4jJE", "pjZ8Yt1XGILfi-FUsewpnnolGgZk", ext) == (
        "f137ab68b7f8112d20ee528ab6074564e2796250"
    )


def test_numeric_timestamp_is_accepted(world: World) -> None:
    card_id = world.create_card()
    ticket = world.ticket()
    ts, nonce = int(world.fake.now()), uuid.uuid4().hex
    ext = {"code": "NUM1", "timestamp": ts, "nonce_str": nonce}
    ext["signature"] = sha1_signature([ticket, card_id, "NUM1", str(ts), nonce])
    assert world.add(card_id, json.dumps(ext))["errMsg"] == "addCard:ok"


def test_wrong_signature(world: World) -> None:
    card_id = world.create_card()
    good = json.loads(world.ext(card_id, code="SIG1"))
    good["signature"] = "0" * 40
    assert _reason(world.add(card_id, json.dumps(good))) == "signature_mismatch"


def test_jsapi_ticket_is_the_wrong_ticket(world: World) -> None:
    card_id = world.create_card()
    jsapi = world.http.get("/cgi-bin/ticket/getticket", {"access_token": world.tokens.current(), "type": "jsapi"})[
        "ticket"
    ]
    assert _reason(world.add(card_id, world.ext(card_id, code="JS1", ticket=jsapi))) == "signature_mismatch"


def test_expired_ticket(world: World, fake: FakeWeChatControl) -> None:
    card_id = world.create_card()
    old = world.ticket()
    fake.advance_clock(7201)
    world.ticket()  # a new one is issued; the old died with its lifetime
    answer = world.add(card_id, world.ext(card_id, code="OLD1", ticket=old))
    assert answer["errcode"] == 40080
    assert _reason(answer) == "ticket_expired"
    assert "签名错误" in answer["errMsg"]


def test_previous_ticket_is_accepted_within_grace_and_rejected_after(world: World, fake: FakeWeChatControl) -> None:
    card_id = world.create_card()
    old = world.ticket()
    new = fake.rotate_ticket(world.oa_appid, grace_s=300)
    assert new != old and world.ticket() == new

    fake.advance_clock(299)
    within = world.add(card_id, world.ext(card_id, code="PREV1", ticket=old))
    assert within["errMsg"] == "addCard:ok"
    assert within["_fake"]["tickets"] == ["previous"]
    assert world.add(card_id, world.ext(card_id, code="CURR1", ticket=new))["_fake"]["tickets"] == ["current"]

    fake.advance_clock(2)
    assert _reason(world.add(card_id, world.ext(card_id, code="PREV2", ticket=old))) == "ticket_expired"


def test_rotation_without_grace_kills_the_previous_ticket_at_once(world: World, fake: FakeWeChatControl) -> None:
    card_id = world.create_card()
    old = world.ticket()
    fake.rotate_ticket(world.oa_appid, grace_s=0)
    assert _reason(world.add(card_id, world.ext(card_id, code="DEAD1", ticket=old))) == "ticket_expired"


def test_reused_timestamp_and_nonce(world: World) -> None:
    card_id = world.create_card()
    ticket = world.ticket()
    ts = int(world.fake.now())
    assert (
        world.add(card_id, world.ext(card_id, code="PAIR1", timestamp=ts, nonce_str="n1", ticket=ticket))["errMsg"]
        == "addCard:ok"
    )
    again = world.add(card_id, world.ext(card_id, code="PAIR2", timestamp=ts, nonce_str="n1", ticket=ticket))
    assert _reason(again) == "nonce_reused"


def test_cancel_burns_the_pair(world: World) -> None:
    card_id = world.create_card()
    ext = world.ext(card_id, code="CANCEL1")
    assert world.add(card_id, ext, cancel=True) == {"errMsg": "addCard:fail cancel"}
    assert _reason(world.add(card_id, ext)) == "nonce_reused"


def test_code_rules(world: World) -> None:
    custom = world.create_card()
    generated = world.create_card(use_custom_code=False)
    assert _reason(world.add(custom, world.ext(custom, code="A" * 21))) == "bad_code"
    assert _reason(world.add(custom, world.ext(custom, code="SEAT-1"))) == "bad_code"
    assert _reason(world.add(custom, world.ext(custom))) == "code_missing"
    assert _reason(world.add(generated, world.ext(generated, code="X1"))) == "code_not_allowed"
    assert world.add(custom, world.ext(custom, code="A" * 20))["errMsg"] == "addCard:ok"


def test_a_custom_code_is_received_only_once(world: World) -> None:
    card_id = world.create_card()
    assert world.add(card_id, world.ext(card_id, code="ONCE1"))["errMsg"] == "addCard:ok"
    answer = world.add(card_id, world.ext(card_id, code="ONCE1"))
    assert (answer["errcode"], _reason(answer)) == (40116, "code_already_received")


def test_signed_set_must_equal_the_fields_present(world: World) -> None:
    card_id = world.create_card()
    ticket = world.ticket()
    ts = str(int(world.fake.now()))

    nonce_not_signed = _hand_made(ticket, card_id, {"code": "SET1", "timestamp": ts}, {"nonce_str": "abc"})
    assert _reason(world.add(card_id, nonce_not_signed)) == "signature_mismatch"

    signed_but_absent = {"code": "SET2", "timestamp": ts, "nonce_str": "abd"}
    ext = json.loads(_hand_made(ticket, card_id, signed_but_absent))
    del ext["nonce_str"]
    assert _reason(world.add(card_id, json.dumps(ext))) == "signature_mismatch"

    outer_str_signed = {"code": "SET3", "timestamp": ts, "nonce_str": "abe", "outer_str": "x"}
    assert _reason(world.add(card_id, _hand_made(ticket, card_id, outer_str_signed))) == "signature_mismatch"

    outer_str_unsigned = _hand_made(
        ticket, card_id, {"code": "SET4", "timestamp": ts, "nonce_str": "abf"}, {"outer_str": "x"}
    )
    assert world.add(card_id, outer_str_unsigned)["errMsg"] == "addCard:ok"


def test_card_ext_must_be_a_json_string(world: World, fake: FakeWeChatControl) -> None:
    card_id = world.create_card()
    as_object = json.loads(world.ext(card_id, code="OBJ1"))
    answer = fake.add_card(world.person, world.mp_appid, [{"cardId": card_id, "cardExt": as_object}])
    assert _reason(answer) == "card_ext_not_string"
    assert _reason(world.add(card_id, "{not json")) == "card_ext_not_json"


def test_nonce_longer_than_32(world: World) -> None:
    card_id = world.create_card()
    assert _reason(world.add(card_id, world.ext(card_id, code="N1", nonce_str="n" * 33))) == "nonce_too_long"


def test_openid_rules(world: World, fake: FakeWeChatControl) -> None:
    bound = world.create_card(bind_openid=True)
    unbound = world.create_card()
    mp_openid = fake.openid(world.person, world.mp_appid)

    assert _reason(world.add(bound, world.ext(bound, code="B1"))) == "openid_missing"
    assert _reason(world.add(bound, world.ext(bound, code="B2", openid=mp_openid))) == "openid_mismatch"
    assert _reason(world.add(unbound, world.ext(unbound, code="B3", openid=world.oa_openid()))) == (
        "openid_not_allowed"
    )
    assert world.add(bound, world.ext(bound, code="B4", openid=world.oa_openid()))["errMsg"] == "addCard:ok"


def test_unapproved_card_needs_a_whitelisted_person(world: World, fake: FakeWeChatControl) -> None:
    card_id = world.create_card(approve=False)
    assert _reason(world.add(card_id, world.ext(card_id, code="W1"))) == "card_not_approved"
    fake.whitelist(world.oa_appid, world.person)
    assert world.add(card_id, world.ext(card_id, code="W2"))["errMsg"] == "addCard:ok"


def test_stock_and_get_limit(world: World) -> None:
    small = world.create_card(quantity=1)
    assert world.add(small, world.ext(small, code="S1"))["errMsg"] == "addCard:ok"
    empty = world.add(small, world.ext(small, code="S2"))
    assert (empty["errcode"], _reason(empty)) == (45031, "stock_empty")

    limited = world.create_card(get_limit=1)
    assert world.add(limited, world.ext(limited, code="L1"))["errMsg"] == "addCard:ok"
    again = world.add(limited, world.ext(limited, code="L2"))
    assert (again["errcode"], _reason(again)) == (45033, "get_limit_reached")


def test_mini_program_of_another_account_cannot_add(world: World, make_world: Any) -> None:
    card_id = world.create_card()
    stranger = make_world()
    ext = world.ext(card_id, code="X1")
    answer = world.fake.add_card(world.person, stranger.mp_appid, [{"cardId": card_id, "cardExt": ext}])
    assert _reason(answer) == "mini_program_not_bound_to_card_oa"


def test_batch_is_all_or_nothing(world: World, fake: FakeWeChatControl) -> None:
    card_id = world.create_card()
    ticket = world.ticket()
    items = [
        {"cardId": card_id, "cardExt": world.ext(card_id, code="BATCH1", ticket=ticket)},
        {"cardId": card_id, "cardExt": world.ext(card_id, code="BATCH1", ticket=ticket)},
    ]
    answer = fake.add_card(world.person, world.mp_appid, items)
    assert (_reason(answer), answer["_fake"]["index"]) == ("code_already_received", 1)
    assert fake.card(card_id)["stock"] == 10
