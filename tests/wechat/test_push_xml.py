"""Card event XML → typed events, including the official sample with spaces around CDATA."""

import pytest

from wechat.pushes import (
    CardEvent,
    CardNotPassCheck,
    EventParseError,
    OtherEvent,
    UserConsumeCard,
    UserGetCard,
    parse_event,
    render_event,
)

OFFICIAL_USER_GET_CARD = """<xml> <ToUserName> <![CDATA[gh_fc0a06a20993]]> </ToUserName>
 <FromUserName> <![CDATA[oZI8Fj040-be6rlDohc6gkoPOQTQ]]> </FromUserName> <CreateTime>1472551036</CreateTime>
 <MsgType> <![CDATA[event]]> </MsgType> <Event> <![CDATA[user_get_card]]> </Event>
 <CardId> <![CDATA[pZI8Fjwsy5fVPRBeD78J4RmqVvBc]]> </CardId> <IsGiveByFriend>0</IsGiveByFriend>
 <UserCardCode> <![CDATA[226009850808]]> </UserCardCode> <FriendUserName> <![CDATA[]]> </FriendUserName>
 <OuterId>0</OuterId> <OldUserCardCode> <![CDATA[]]> </OldUserCardCode> <OuterStr> <![CDATA[12b]]> </OuterStr>
 <IsRestoreMemberCard>0</IsRestoreMemberCard> <IsRecommendByFriend>0</IsRecommendByFriend> </xml>"""


def test_official_user_get_card_sample() -> None:
    event = parse_event(OFFICIAL_USER_GET_CARD)
    assert isinstance(event, UserGetCard)
    assert (event.from_user, event.create_time, event.code, event.outer_str) == (
        "oZI8Fj040-be6rlDohc6gkoPOQTQ",
        1472551036,
        "226009850808",
        "12b",
    )
    assert event.is_give_by_friend is False and event.old_user_card_code == ""


def test_dedupe_key_separates_the_cards_of_one_batch_add() -> None:
    first = UserGetCard("gh", "oA", 1700000000, "card", code="C1")
    second = UserGetCard("gh", "oA", 1700000000, "card", code="C2")
    assert first.dedupe_key != second.dedupe_key
    assert first.dedupe_key == parse_event(render_event(first)).dedupe_key


@pytest.mark.parametrize(
    "event",
    [
        UserGetCard("gh", "oA", 1, "card", code="C", union_id="u", is_give_by_friend=True, old_user_card_code="O"),
        UserConsumeCard("gh", "oA", 2, "card", code="C", consume_source="FROM_API"),
        CardNotPassCheck("gh", "oA", 3, "card", refuse_reason="logo"),
    ],
)
def test_render_then_parse_round_trips(event: CardEvent) -> None:
    assert parse_event(render_event(event)) == event


def test_unknown_event_is_kept_not_rejected() -> None:
    body = render_event(UserGetCard("gh", "oA", 1, "card", code="C")).replace("user_get_card", "user_view_card")
    event = parse_event(body)
    assert isinstance(event, OtherEvent) and event.name == "user_view_card"


@pytest.mark.parametrize(
    "body",
    [
        "not xml",
        "<root/>",
        "<xml><MsgType>text</MsgType></xml>",
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><xml>&a;</xml>',
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a SYSTEM "file:///etc/passwd">]><xml><A>&a;</A></xml>',
        '<!DOCTYPE x [<!ENTITY l "ll"><!ENTITY l2 "&l;&l;&l;&l;&l;&l;&l;&l;">]><xml><A>&l2;&l2;</A></xml>',
        "<!DOCTYPE xml><xml><MsgType>event</MsgType></xml>",
        "<xml><A>&undefined;</A></xml>",
        "",
    ],
)
def test_malformed_or_dangerous_xml_is_refused(body: str) -> None:
    with pytest.raises(EventParseError):
        parse_event(body)
