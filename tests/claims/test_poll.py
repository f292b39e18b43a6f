"""Polling an order's claim over real HTTP: the exact ``wx.addCard`` cardList, one cache read and no
database write in the common case, ETag/304, 404 for anyone else's order, just-in-time issue,
and re-signing of anything signed by an older card ticket before it is served."""

from __future__ import annotations

import json

from fastapi import FastAPI
from fastapi.testclient import TestClient

from cardpipe.credentials import CredentialStore
from cardpipe.db import get_sessionmaker
from cardpipe.routes import miniprogram
from cardpipe.runtime import credential_store, redis_client, wechat_http
from cardpipe.services.queues import ACTOR_METRICS_KEY
from models import CredentialKind, TicketState
from tests.claims.conftest import Launch
from tests.waiting import wait_until
from wechat.signing import card_ext_signed_values, sha1_signature


def issue_messages_processed() -> int:
    return int(redis_client().hget(ACTOR_METRICS_KEY, "issue_orders|processed") or 0)


def signed_by(card_id: str, card_ext: str, api_ticket: str) -> bool:
    ext = json.loads(card_ext)
    signature: str = ext["signature"]
    return sha1_signature(card_ext_signed_values(api_ticket, card_id, ext)) == signature


def test_a_ready_order_answers_the_exact_card_list_signed_with_the_current_ticket(launch: Launch) -> None:
    # Given an order of three pre-issued tickets
    buyer = launch.buyer(tickets=3)
    launch.login(buyer)
    tickets = launch.tickets(buyer)

    # When its buyer polls
    response = launch.poll(buyer)

    # Then the body is ready with one {cardId, cardExt} per ticket, in seq order, signed now
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body == {
        "order_no": buyer.order_no,
        "status": "ready",
        "cardList": [{"cardId": t.card_id, "cardExt": t.card_ext} for t in tickets],
    }
    current = credential_store().card_ticket(launch.world.oa_appid)
    for ticket, item in zip(tickets, body["cardList"], strict=True):
        assert signed_by(item["cardId"], item["cardExt"], current.value)
        assert json.loads(item["cardExt"])["outer_str"] == str(ticket.id)
    # and the tickets are served (once: the first poll builds the cached payload)
    assert {t.state for t in launch.tickets(buyer)} == {TicketState.SERVED}


def test_repeated_polls_read_the_cache_write_nothing_and_honour_if_none_match(launch: Launch) -> None:
    buyer = launch.buyer(tickets=2)
    launch.login(buyer)
    first = launch.poll(buyer)
    served = [(t.updated_at, t.served_at) for t in launch.tickets(buyer)]

    again = launch.poll(buyer)
    not_modified = launch.poll(buyer, etag=first.headers["etag"])

    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["etag"] == first.headers["etag"]
    assert launch.poll(buyer, etag='"something-else"').status_code == 200
    assert [(t.updated_at, t.served_at) for t in launch.tickets(buyer)] == served


def test_another_users_order_is_a_404_like_an_unknown_one(launch: Launch) -> None:
    owner, other = launch.buyer(), launch.buyer()
    launch.login(other)

    stolen = launch.poll(other, order_no=owner.order_no)
    unknown = launch.poll(other, order_no="NO-SUCH-ORDER")

    assert stolen.status_code == unknown.status_code == 404
    assert stolen.json() == unknown.json() == {"detail": "no such order"}
    assert {t.state for t in launch.tickets(owner)} == {TicketState.READY}


def test_an_order_not_pre_issued_is_issued_just_in_time(launch: Launch) -> None:
    # Given an order nobody pre-issued
    buyer = launch.buyer(tickets=2, issue=False)
    launch.login(buyer)

    # When its buyer polls, twice in a row
    pending = launch.poll(buyer)
    launch.poll(buyer)

    # Then it is pending with a retry hint, and one issue was queued however often it is polled
    assert pending.status_code == 200 and pending.headers["retry-after"] == "1"
    assert pending.json() == {"order_no": buyer.order_no, "status": "pending", "retry_after_ms": 1000}
    # and after the worker issued it, the poll turns ready
    body = wait_until(lambda: (r := launch.poll(buyer).json())["status"] == "ready" and r, what="ready", timeout_s=10)
    assert len(body["cardList"]) == 2 and len(launch.tickets(buyer)) == 2
    assert wait_until(issue_messages_processed, what="issue processed") == 1


def test_post_claim_queues_the_issue_once_and_points_at_the_poll(launch: Launch) -> None:
    buyer = launch.buyer(issue=False)
    launch.login(buyer)

    url = f"{launch.api}/v1/orders/{buyer.order_no}/claim"
    answers = [launch.http.post(url, headers=launch.auth(buyer)) for _ in range(3)]

    assert {a.status_code for a in answers} == {202}
    assert answers[0].json() == {
        "order_no": buyer.order_no,
        "poll_url": f"/v1/orders/{buyer.order_no}/claim",
        "retry_after_ms": 1000,
    }
    wait_until(lambda: len(launch.tickets(buyer)) == 1, what="issued", timeout_s=10)
    assert wait_until(issue_messages_processed, what="issue processed") == 1


def test_a_payload_signed_by_an_older_ticket_is_re_signed_before_it_is_served(launch: Launch) -> None:
    # Given a buyer whose payload is cached, signed with ticket version v
    buyer = launch.buyer(tickets=2)
    launch.login(buyer)
    old = launch.poll(buyer).json()["cardList"]
    before = credential_store().card_ticket(launch.world.oa_appid)

    # When WeChat rotates the card ticket and the store picks it up (version v+1) before any bulk
    # re-sign reached this order
    launch.fake.rotate_ticket(launch.world.oa_appid, grace_s=0)
    store = CredentialStore(redis_client(), get_sessionmaker(), wechat_http())  # no rotation listener
    after = store.refresh(launch.world.oa_appid, CredentialKind.CARD_TICKET, min_validity_s=0, force=True).credential
    assert after.version == before.version + 1

    # Then the next poll serves a payload signed with the new ticket, never the old one
    fresh = launch.poll(buyer).json()["cardList"]
    assert fresh != old
    assert all(signed_by(i["cardId"], i["cardExt"], after.value) for i in fresh)
    assert {t.ticket_version for t in launch.tickets(buyer)} == {after.version}
    # and WeChat (the fake, with no grace for the old ticket) accepts it
    answer = launch.add_card(buyer, fresh)
    assert answer["errMsg"] == "addCard:ok", answer
    assert launch.add_card(buyer, old)["_fake"]["reason"] in {"ticket_expired", "signature_mismatch"}


def test_claimed_tickets_leave_the_card_list(launch: Launch) -> None:
    buyer = launch.buyer()
    launch.login(buyer)
    answer = launch.add_card(buyer, launch.ready_card_list(buyer))
    launch.post_result(buyer, answer)

    wait_until(lambda: launch.settled(buyer), what="claimed by both signals")
    done = wait_until(lambda: (r := launch.poll(buyer).json())["status"] == "done" and r, what="done")
    assert done == {"order_no": buyer.order_no, "status": "done", "cardList": []}


def test_the_documented_route_answers_like_the_fast_path(launch: Launch) -> None:
    buyer = launch.buyer()
    launch.login(buyer)
    plain = FastAPI()
    plain.include_router(miniprogram.router)  # the FastAPI route alone, without ClaimPollFastPath

    with TestClient(plain) as test_client:
        routed = test_client.get(f"/v1/orders/{buyer.order_no}/claim", headers=launch.auth(buyer))
        unauthorised = test_client.get(f"/v1/orders/{buyer.order_no}/claim")
        malformed = test_client.get(f"/v1/orders/{'x' * 65}/claim", headers=launch.auth(buyer))
    fast = launch.poll(buyer)

    assert (routed.status_code, routed.content, routed.headers["etag"]) == (200, fast.content, fast.headers["etag"])
    assert unauthorised.status_code == 401
    assert malformed.status_code == 422
    assert launch.poll(buyer, order_no="x" * 65).status_code == 422  # declined by the fast path
