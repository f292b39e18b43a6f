"""Event pushes from the fake to the OA server URL: signatures, safe mode both ways, retries."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from wechat.crypto import MessageCrypto
from wechat.errors import SignatureError
from wechat.fake import FakeWeChatControl, push_crypto
from wechat.pushes import (
    CardNotPassCheck,
    CardPassCheck,
    UserConsumeCard,
    UserDelCard,
    UserGetCard,
    parse_event,
    parse_xml,
)
from wechat.signing import server_signature

if TYPE_CHECKING:
    from tests.wechat.conftest import PushReceiver, Received
    from tests.worlds import MakeWorld, World


def _verified(world: World, request: Received) -> None:
    query = request.query
    assert query["signature"] == server_signature(world.server_token, query["timestamp"], query["nonce"])


def _claim(world: World, code: str, outer_str: str = "") -> str:
    card_id = world.create_card()
    answer = world.add(card_id, world.ext(card_id, code=code, outer_str=outer_str or None))
    assert answer["errMsg"] == "addCard:ok"
    return card_id


def test_user_get_card_push_in_plain_mode(world: World, fake: FakeWeChatControl, receiver: PushReceiver) -> None:
    card_id = _claim(world, "PUSH0001", outer_str="order-9")
    requests = receiver.wait_for(2)  # card_pass_check, then user_get_card

    audit, got = requests
    assert isinstance(parse_event(audit.body), CardPassCheck)
    _verified(world, got)
    event = parse_event(got.body)
    assert isinstance(event, UserGetCard)
    oa_openid = world.oa_openid()
    assert (event.from_user, got.query["openid"]) == (oa_openid, oa_openid)
    assert oa_openid != fake.openid(world.person, world.mp_appid)
    assert (event.card_id, event.code, event.outer_str) == (card_id, "PUSH0001", "order-9")
    assert event.union_id == fake.person(world.person)["unionid"]
    assert event.is_give_by_friend is False
    assert "encrypt_type" not in got.query
    records = fake.wait_for_pushes(world.oa_appid, 2)
    assert [(r["event"], r["status"], r["reply"]) for r in records] == [
        ("card_pass_check", "delivered", "success"),
        ("user_get_card", "delivered", "success"),
    ]


def test_one_batch_shares_create_time(world: World, fake: FakeWeChatControl, receiver: PushReceiver) -> None:
    card_id = world.create_card()
    ticket = world.ticket()
    items = [{"cardId": card_id, "cardExt": world.ext(card_id, code=c, ticket=ticket)} for c in ("B1", "B2")]
    assert fake.add_card(world.person, world.mp_appid, items)["errMsg"] == "addCard:ok"
    events = [parse_event(r.body) for r in receiver.wait_for(3)[1:]]
    assert {e.user_card_code for e in events} == {"B1", "B2"}
    assert len({e.create_time for e in events}) == 1
    assert len({e.dedupe_key for e in events}) == 2


def test_safe_mode_push_decrypts_with_message_crypto(make_world: MakeWorld, receiver: PushReceiver) -> None:
    world = make_world(push_url=receiver.url, safe_mode=True)
    _claim(world, "SAFE0001")
    got = receiver.wait_for(2)[1]
    query = got.query
    assert query["encrypt_type"] == "aes"
    _verified(world, got)

    envelope = parse_xml(got.body)
    crypto = MessageCrypto(world.server_token, world.aes_key, world.oa_appid)
    plain = crypto.verify_and_decrypt(query["msg_signature"], query["timestamp"], query["nonce"], envelope["Encrypt"])
    event = parse_event(plain)
    assert isinstance(event, UserGetCard)
    assert event.code == "SAFE0001"
    assert envelope["ToUserName"] == event.to_user

    with pytest.raises(SignatureError):
        crypto.verify_and_decrypt("0" * 40, query["timestamp"], query["nonce"], envelope["Encrypt"])


def test_message_crypto_output_decrypts_with_the_fakes_implementation() -> None:
    key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
    crypto = MessageCrypto("tok", key, "wxappid")
    encrypted = crypto.encrypt("<xml><A>你好</A></xml>")
    assert push_crypto.decrypt(key, "wxappid", encrypted) == "<xml><A>你好</A></xml>"
    assert crypto.sign("1", "2", encrypted) == push_crypto.msg_signature("tok", "1", "2", encrypted)
    with pytest.raises(push_crypto.SafeModeError):
        push_crypto.decrypt(key, "wxother", encrypted)


def _encrypted_reply(world: World, *, tamper: bool) -> Any:
    crypto = MessageCrypto(world.server_token, world.aes_key, world.oa_appid)

    def reply(request: Received) -> str:
        encrypted = crypto.encrypt("<xml><Content>success</Content></xml>")
        timestamp, nonce = str(int(time.time())), "424242"
        signature = "f" * 40 if tamper else crypto.sign(timestamp, nonce, encrypted)
        return (
            f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt><MsgSignature>{signature}</MsgSignature>"
            f"<TimeStamp>{timestamp}</TimeStamp><Nonce>{nonce}</Nonce></xml>"
        )

    return reply


@pytest.mark.parametrize(("tamper", "verdict"), [(False, "encrypted_ok"), (True, "encrypted_bad_signature")])
def test_fake_checks_an_encrypted_reply(
    make_world: MakeWorld, fake: FakeWeChatControl, receiver: PushReceiver, tamper: bool, verdict: str
) -> None:
    world = make_world(push_url=receiver.url, safe_mode=True)
    receiver.reply = _encrypted_reply(world, tamper=tamper)
    _claim(world, "REPLY1")
    records = fake.wait_for_pushes(world.oa_appid, 2)
    assert records[-1]["reply"] == verdict


def test_slow_receiver_gets_three_tries(world: World, fake: FakeWeChatControl, receiver: PushReceiver) -> None:
    fake.configure(push_timeout_s=0.2)
    receiver.delay_s = 0.4
    card_id = world.create_card()
    records = fake.wait_for_pushes(world.oa_appid, 1)
    assert records[0]["status"] == "failed"
    assert [a["outcome"] for a in records[0]["attempts"]] == ["timeout"] * 3
    bodies = {(r.body, tuple(sorted(r.query.items()))) for r in receiver.wait_for(3)}
    assert len(bodies) == 1  # every try carries the same signed request
    assert parse_event(receiver.received[0].body).card_id == card_id


def test_receiver_recovering_on_the_second_try(world: World, fake: FakeWeChatControl, receiver: PushReceiver) -> None:
    fake.configure(push_timeout_s=0.2)
    receiver.delay_s, receiver.slow_first = 0.4, 1
    world.create_card()
    (record,) = fake.wait_for_pushes(world.oa_appid, 1)
    assert record["status"] == "delivered"
    assert [a["outcome"] for a in record["attempts"]] == ["timeout", "http_200"]


def test_receiver_down_or_failing(
    make_world: MakeWorld, fake: FakeWeChatControl, receiver: PushReceiver, closed_port_url: str
) -> None:
    down = make_world(push_url=closed_port_url)
    down.create_card()
    (record,) = fake.wait_for_pushes(down.oa_appid, 1)
    assert record["status"] == "failed"
    assert len(record["attempts"]) == 3
    assert all(a["outcome"].startswith("connection_error") for a in record["attempts"])

    failing = make_world(push_url=receiver.url)
    receiver.status = 500
    failing.create_card()
    (record,) = fake.wait_for_pushes(failing.oa_appid, 1)
    assert [a["outcome"] for a in record["attempts"]] == ["http_500"] * 3


def test_other_card_events(world: World, fake: FakeWeChatControl, receiver: PushReceiver) -> None:
    rejected = world.create_card(approve=False)
    fake.review_card(rejected, approve=False, reason="logo unclear")
    consumed = _claim(world, "EV1")
    world.api.code_consume(consumed, "EV1")
    deleted = _claim(world, "EV2")
    fake.delete_user_card(deleted, "EV2")
    in_office = _claim(world, "EV3")
    fake.consume_in_back_office(in_office, "EV3", location_name="Gate 2")

    events = [parse_event(r.body) for r in receiver.wait_for(10)]
    by_type = {type(e): e for e in events}
    not_pass = by_type[CardNotPassCheck]
    assert isinstance(not_pass, CardNotPassCheck) and not_pass.refuse_reason == "logo unclear"
    sources = {(e.code, e.consume_source) for e in events if isinstance(e, UserConsumeCard)}
    assert sources == {("EV1", "FROM_API"), ("EV3", "FROM_MP")}
    assert [e.code for e in events if isinstance(e, UserDelCard)] == ["EV2"]
    assert world.api.code_get(deleted, "EV2", check_consume=False).user_card_status == "DELETE"


def test_url_verification(world: World, fake: FakeWeChatControl, receiver: PushReceiver) -> None:
    result = fake.verify_url(world.oa_appid, echostr="hello123")
    assert result["ok"] is True
    (request,) = receiver.received
    assert request.method == "GET"
    _verified(world, request)
