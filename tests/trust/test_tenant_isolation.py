"""A push, a client result or a WeChat consume acts only on tickets of events of the tenant it
came in for: another official account's correctly signed push naming our card and code, or
another mini program's user naming our ticket, is recorded as foreign and changes nothing."""

from __future__ import annotations

import json
import time
from typing import Any

import dramatiq
import requests

from models import InboxSource, Redemption, TicketState
from tests.claims.conftest import Buyer, Launch, drain, inbox_rows
from tests.trust.conftest import Tenant
from wechat.fake.pusher import PushTarget, signed_request
from wechat.pushes import CardEvent, CardNotPassCheck, UserConsumeCard, UserDelCard, UserGetCard


def push_as(tenant: Tenant, event: CardEvent, nonce: str) -> requests.Response:
    """``event`` delivered to the other tenant's URL, signed with that tenant's own token."""
    world = tenant.world
    push_target = PushTarget(world.oa_appid, tenant.url, world.server_token, world.aes_key, False)
    params, body = signed_request(push_target, event, str(int(time.time())), nonce)
    return requests.post(tenant.url, params=params, data=body.encode(), timeout=10)


def claimed(launch: Launch) -> Buyer:
    buyer = launch.buyer()
    launch.login(buyer)
    launch.ready_card_list(buyer)
    return buyer


def redemption_count() -> int:
    from cardpipe.db import session_scope

    with session_scope() as session:
        return session.query(Redemption).count()


def test_another_accounts_pushes_do_not_touch_our_tickets(
    launch: Launch, other_tenant: Tenant, broker_worker: dramatiq.Worker
) -> None:
    # Given a served ticket of our event, and its card and code known to the other tenant
    buyer = claimed(launch)
    (ticket,) = launch.tickets(buyer)
    code = ticket.code or ""
    now = int(time.time())
    from_user = "o-hostile-user"
    events: list[CardEvent] = [
        UserGetCard("gh_x", from_user, now, launch.card_id, code=code, outer_str=str(ticket.id)),
        UserDelCard("gh_x", from_user, now, launch.card_id, code=code),
        UserConsumeCard("gh_x", from_user, now, launch.card_id, code=code, consume_source="FROM_API"),
        CardNotPassCheck("gh_x", "o-system", now + 60, launch.card_id, refuse_reason="forged"),
    ]
    redemptions_before = redemption_count()

    # When the other account pushes them to its own URL, correctly signed with its own token
    answers = [push_as(other_tenant, event, str(1000 + n)) for n, event in enumerate(events)]
    drain(broker_worker)

    # Then each was stored and acknowledged, recorded as foreign, and nothing of ours changed
    assert [(a.status_code, a.text) for a in answers] == [(200, "success")] * len(events)
    (after,) = launch.tickets(buyer)
    assert (after.state, after.confirmed_by_wechat, after.oa_openid) == (TicketState.SERVED, False, None)
    assert launch.event().card_status == "CARD_STATUS_VERIFY_OK"
    assert redemption_count() == redemptions_before
    foreign = [r for r in inbox_rows(InboxSource.WECHAT) if (r.last_error or "").startswith("foreign")]
    assert len(foreign) == len(events) and all(r.processed_at is not None for r in foreign)


def test_another_mini_programs_user_cannot_claim_our_ticket_with_a_result(
    launch: Launch, other_tenant: Tenant, broker_worker: dramatiq.Worker
) -> None:
    # Given our served ticket, and a user of the other mini program with an order of the same number
    buyer = claimed(launch)
    (ticket,) = launch.tickets(buyer)
    intruder = other_tenant.world
    code = launch.fake.login(intruder.person, intruder.mp_appid)
    token = requests.post(f"{launch.api}/v1/sessions", json={"code": code, "appid": intruder.mp_appid}, timeout=10)
    assert token.status_code == 200, token.text
    auth = {"Authorization": f"Bearer {token.json()['token']}"}
    card_ext = json.dumps({"outer_str": str(ticket.id), "nonce_str": ticket.nonce})
    result: dict[str, Any] = {
        "errMsg": "addCard:ok",
        "cardList": [{"cardId": launch.card_id, "cardExt": card_ext, "code": "x", "isSuccess": True}],
    }

    # When the intruder posts a result naming our ticket, for our order number
    answer = requests.post(
        f"{launch.api}/v1/orders/{buyer.order_no}/claim/result", json=result, headers=auth, timeout=10
    )
    drain(broker_worker)

    # Then the order is not theirs and our ticket is untouched
    assert answer.status_code == 404
    (after,) = launch.tickets(buyer)
    assert (after.state, after.confirmed_by_client) == (TicketState.SERVED, False)
