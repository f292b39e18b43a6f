"""Every event type's dedupe key separates every two distinct events: the audit verdicts of two
cards in the same second (same system sender, no code) are both stored and both applied."""

from __future__ import annotations

import time
from dataclasses import replace

import dramatiq
import pytest
import requests
from sqlalchemy import select

from cardpipe.db import session_scope
from models import Event, OfficialAccount
from tests.claims.conftest import Launch, drain
from wechat.fake.pusher import PushTarget, signed_request
from wechat.pushes import (
    CardEvent,
    CardNotPassCheck,
    CardPassCheck,
    OtherEvent,
    UserConsumeCard,
    UserDelCard,
    UserGetCard,
    UserGiftingCard,
    parse_event,
    render_event,
)

NOW = 1_790_000_000
CARD_A, CARD_B = "pCardAAAAAAAAAAAAAAAAAAAAAAA", "pCardBBBBBBBBBBBBBBBBBBBBBBB"
EVENTS: list[CardEvent] = [
    UserGetCard("gh", "o-user", NOW, CARD_A, code="CODE00000001", outer_str="17"),
    UserDelCard("gh", "o-user", NOW, CARD_A, code="CODE00000001"),
    UserConsumeCard("gh", "o-user", NOW, CARD_A, code="CODE00000001", consume_source="FROM_API"),
    UserGiftingCard("gh", "o-user", NOW, CARD_A, code="CODE00000001"),
    CardPassCheck("gh", "o-system", NOW, CARD_A),
    CardNotPassCheck("gh", "o-system", NOW, CARD_A, refuse_reason="logo"),
    OtherEvent("gh", "o-user", NOW, CARD_A, name="user_view_card", extra={"UserCardCode": "CODE00000001"}),
]


def _id(event: CardEvent) -> str:
    return event.name if isinstance(event, OtherEvent) else event.event


@pytest.mark.parametrize("event", EVENTS, ids=_id)
def test_two_cards_in_the_same_second_have_distinct_keys(event: CardEvent) -> None:
    assert event.dedupe_key != replace(event, card_id=CARD_B).dedupe_key


#: The events that name a code.
CodeEvent = UserGetCard | UserDelCard | UserConsumeCard | UserGiftingCard


@pytest.mark.parametrize("event", [e for e in EVENTS if isinstance(e, CodeEvent)], ids=_id)
def test_two_codes_of_one_card_in_the_same_second_have_distinct_keys(event: CodeEvent) -> None:
    assert event.dedupe_key != replace(event, code="CODE00000002").dedupe_key


@pytest.mark.parametrize("event", EVENTS, ids=_id)
def test_a_redelivery_has_the_same_key(event: CardEvent) -> None:
    if isinstance(event, OtherEvent):
        return  # stored as parsed; its XML has no Event element of its own
    assert parse_event(render_event(event)).dedupe_key == event.dedupe_key


def test_two_cards_audited_in_the_same_second_both_get_their_verdict(
    launch: Launch, broker_worker: dramatiq.Worker
) -> None:
    # Given a second event of the same account whose card awaits its audit
    second_card = launch.world.create_card(approve=False)
    with session_scope() as session:
        first = session.get_one(Event, launch.event_id)
        oa_id = session.scalar(select(OfficialAccount.id).where(OfficialAccount.appid == launch.world.oa_appid))
        session.add(
            Event(name="Second", official_account_id=oa_id, mini_program_id=first.mini_program_id, card_id=second_card)
        )
    now = int(time.time()) + 1
    world = launch.world
    url = f"{launch.api}/wechat/{world.oa_appid}/events"
    target = PushTarget(world.oa_appid, url, world.server_token, world.aes_key, False)

    # When two verdicts of the same second arrive, one for a failed re-audit of the first card
    answers = []
    for nonce, event in (
        ("n1", CardNotPassCheck(world.original_id, "o-system", now, launch.card_id, refuse_reason="logo")),
        ("n2", CardPassCheck(world.original_id, "o-system", now, second_card)),
    ):
        params, body = signed_request(target, event, str(int(time.time())), nonce)
        answers.append(requests.post(url, params=params, data=body.encode(), timeout=10))
    drain(broker_worker)

    # Then both were applied
    assert [a.text for a in answers] == ["success", "success"]
    with session_scope() as session:
        rows = session.execute(select(Event.card_id, Event.card_status).where(Event.official_account_id == oa_id))
        statuses = {card_id: status for card_id, status in rows}
    assert statuses == {launch.card_id: "CARD_STATUS_VERIFY_FAIL", second_card: "CARD_STATUS_VERIFY_OK"}
