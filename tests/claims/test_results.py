"""Posting what ``wx.addCard`` returned: stored in the inbox, the codes decrypted by the worker
through the fake's ``code/decrypt``, tickets claimed; a cancel or failure re-signs the spent
tickets at once so the user's retry goes through."""

from __future__ import annotations

import json

import dramatiq

from cardpipe.db import session_scope
from cardpipe.services import inbox
from models import InboxSource, TicketState
from tests.claims.conftest import Launch, drain, inbox_rows
from tests.settings_env import environment
from tests.waiting import wait_until
from workers.claims import process_client_result


def test_a_successful_add_claims_every_ticket_by_the_client(launch: Launch, broker_worker: dramatiq.Worker) -> None:
    buyer = launch.buyer(tickets=2)
    launch.login(buyer)
    answer = launch.add_card(buyer, launch.ready_card_list(buyer))
    assert answer["errMsg"] == "addCard:ok", answer
    assert all(item["code"] not in {t.code for t in launch.tickets(buyer)} for item in answer["cardList"])  # encrypted

    accepted = launch.post_result(buyer, answer)

    assert accepted.status_code == 202
    assert accepted.json() == {
        "duplicate": False,
        "resigned": False,
        "poll_url": f"/v1/orders/{buyer.order_no}/claim",
    }
    wait_until(lambda: all(t.confirmed_by_client for t in launch.tickets(buyer)), what="client confirmation")
    assert {t.state for t in launch.tickets(buyer)} == {TicketState.CLAIMED}
    (stored,) = inbox_rows(InboxSource.CLIENT)
    assert stored.kind == "add_card_result" and json.loads(stored.payload)["result"] == {
        "errMsg": "addCard:ok",
        "cardList": answer["cardList"],
    }


def test_a_ticket_wechat_already_confirmed_is_not_decrypted_again(
    launch: Launch, broker_worker: dramatiq.Worker
) -> None:
    # Given WeChat's user_get_card push was processed before the client's callback
    buyer = launch.buyer()
    launch.login(buyer)
    answer = launch.add_card(buyer, launch.ready_card_list(buyer))
    wait_until(lambda: launch.tickets(buyer)[0].confirmed_by_wechat, what="user_get_card processed")

    # When the mini program posts its result
    assert launch.post_result(buyer, answer).status_code == 202
    drain(broker_worker)

    # Then the client's confirmation is recorded without spending a code/decrypt call
    (ticket,) = launch.tickets(buyer)
    assert (ticket.state, ticket.confirmed_by_client, ticket.confirmed_by_wechat) == (TicketState.CLAIMED, True, True)
    assert "/card/code/decrypt" not in launch.fake.stats(launch.world.oa_appid).get("errcodes", {})


def test_a_result_posted_before_wechats_push_waits_for_it_instead_of_decrypting(
    launch: Launch, broker_worker: dramatiq.Worker
) -> None:
    # Given a grace long enough for the push to arrive even on a busy machine
    with environment(CARDPIPE_CLAIM_PUSH_GRACE_MS="3000"):
        buyer = launch.buyer(tickets=2)
        launch.login(buyer)
        answer = launch.add_card(buyer, launch.ready_card_list(buyer))

        # When the mini program posts its result at once, racing WeChat's user_get_card
        assert launch.post_result(buyer, answer).status_code == 202
        wait_until(lambda: launch.settled(buyer), what="claimed by both signals")

    # Then both signals are recorded and no code/decrypt call was spent
    assert {(t.confirmed_by_client, t.confirmed_by_wechat) for t in launch.tickets(buyer)} == {(True, True)}
    assert "/card/code/decrypt" not in launch.fake.stats(launch.world.oa_appid).get("errcodes", {})


def test_the_same_callback_three_times_is_stored_once_and_claims_once(
    launch: Launch, broker_worker: dramatiq.Worker
) -> None:
    # Given the push is not delivered (so only the client's callback claims)
    launch.fake.register_oa(launch.world.oa_appid, launch.world.oa_secret, launch.world.server_token, push_url=None)
    buyer = launch.buyer()
    launch.login(buyer)
    answer = launch.add_card(buyer, launch.ready_card_list(buyer))

    # When the mini program posts the result three times (and the worker runs each message twice)
    answers = [launch.post_result(buyer, answer).json() for _ in range(3)]
    drain(broker_worker)
    (row,) = inbox_rows(InboxSource.CLIENT)
    claimed_at = launch.tickets(buyer)[0].claimed_at
    process_client_result.send(row.id)
    drain(broker_worker)

    # Then one inbox row, processed once, one transition
    assert [a["duplicate"] for a in answers] == [False, True, True]
    (row,) = inbox_rows(InboxSource.CLIENT)
    assert row.processed_at is not None and row.attempts == 1 and row.last_error is None
    (ticket,) = launch.tickets(buyer)
    assert (ticket.state, ticket.confirmed_by_client, ticket.confirmed_by_wechat) == (TicketState.CLAIMED, True, False)
    assert ticket.claimed_at == claimed_at


def test_a_retry_after_a_cancel_succeeds(launch: Launch, broker_worker: dramatiq.Worker) -> None:
    # Given the user opened the card page and backed out
    buyer = launch.buyer(tickets=2)
    launch.login(buyer)
    first = launch.poll(buyer)
    card_list = first.json()["cardList"]
    cancelled = launch.add_card(buyer, card_list, cancel=True)
    assert cancelled == {"errMsg": "addCard:fail cancel"}

    # When the mini program reports it (with the cardList it passed), three times
    reports = [launch.post_result(buyer, {**cancelled, "cardList": card_list}).json() for _ in range(3)]

    # Then the spent tickets were re-signed before the first answer, only once
    assert [(r["duplicate"], r["resigned"]) for r in reports] == [(False, True), (True, False), (True, False)]
    # the spent payload would fail at WeChat ("已领完": the pair is used up)
    assert launch.add_card(buyer, card_list)["_fake"]["reason"] == "nonce_reused"
    # and polling again gives a fresh payload (new ETag) that WeChat takes
    second = launch.poll(buyer, etag=first.headers["etag"])
    assert second.status_code == 200 and second.headers["etag"] != first.headers["etag"]
    retry = launch.add_card(buyer, second.json()["cardList"])
    assert retry["errMsg"] == "addCard:ok", retry
    launch.post_result(buyer, retry)
    wait_until(lambda: launch.settled(buyer), what="claimed by both signals")


def test_a_bare_cancel_re_signs_what_the_client_could_have_shown_each_time(
    launch: Launch, broker_worker: dramatiq.Worker
) -> None:
    buyer = launch.buyer()
    launch.login(buyer)
    for _ in range(2):  # the user backs out twice; the report names no cardList
        card_list = launch.ready_card_list(buyer)
        cancelled = launch.add_card(buyer, card_list, cancel=True)
        report = launch.post_result(buyer, cancelled).json()
        assert (report["duplicate"], report["resigned"]) == (False, True)

    retry = launch.add_card(buyer, launch.ready_card_list(buyer))
    assert retry["errMsg"] == "addCard:ok", retry
    assert len(inbox_rows(InboxSource.CLIENT)) == 2


def test_a_forged_code_claims_nothing(launch: Launch, broker_worker: dramatiq.Worker) -> None:
    # Given a client that reports success without having added anything
    buyer = launch.buyer()
    launch.login(buyer)
    card_list = launch.ready_card_list(buyer)
    forged = {"errMsg": "addCard:ok", "cardList": [{**card_list[0], "code": "Zm9yZ2VkIGNvZGU=", "isSuccess": True}]}

    assert launch.post_result(buyer, forged).status_code == 202
    drain(broker_worker)

    # Then WeChat's decrypt refused the code, the row is done with the reason, the ticket untouched
    (row,) = inbox_rows(InboxSource.CLIENT)
    assert row.processed_at is not None and "code/decrypt refused" in (row.last_error or "")
    assert launch.tickets(buyer)[0].state == TicketState.SERVED


def test_a_result_for_someone_elses_order_is_a_404_and_stores_nothing(launch: Launch) -> None:
    owner, other = launch.buyer(), launch.buyer()
    launch.login(other)

    own = launch.post_result(other, {"errMsg": "addCard:fail cancel"})
    stolen = launch.http.post(
        f"{launch.api}/v1/orders/{owner.order_no}/claim/result",
        json={"errMsg": "addCard:fail cancel"},
        headers=launch.auth(other),
    )

    assert own.status_code == 202
    assert stolen.status_code == 404 and stolen.json() == {"detail": f"no such order: {owner.order_no}"}
    assert len(inbox_rows(InboxSource.CLIENT)) == 1


def test_bad_result_bodies_are_refused_before_anything_is_stored(launch: Launch) -> None:
    buyer = launch.buyer()
    launch.login(buyer)
    url = f"{launch.api}/v1/orders/{buyer.order_no}/claim/result"

    missing = launch.http.post(url, json={"cardList": []}, headers=launch.auth(buyer))
    too_many = launch.http.post(
        url,
        json={"errMsg": "addCard:ok", "cardList": [{"cardId": "p", "cardExt": "{}"}] * 101},
        headers=launch.auth(buyer),
    )
    too_big = launch.http.post(url, data=b"{" + b" " * 70_000 + b"}", headers=launch.auth(buyer))

    assert missing.status_code == too_many.status_code == 422
    assert too_big.status_code == 413 and "larger than" in too_big.json()["detail"]
    assert inbox_rows(InboxSource.CLIENT) == []


def test_at_least_once_processing_is_harmless(launch: Launch) -> None:
    buyer = launch.buyer()
    with session_scope() as session:
        inbox_id = inbox.store(session, source="client", kind="add_card_result", dedupe_key="client:x", payload="{}")
        assert inbox_id is not None
        inbox.mark_processed(session, inbox_id)

    process_client_result.fn(inbox_id)  # an already processed row is not even parsed

    (row,) = inbox_rows(InboxSource.CLIENT)
    assert row.attempts == 1 and launch.tickets(buyer)[0].state == TicketState.READY
