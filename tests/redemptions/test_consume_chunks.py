"""Consumes in sets: an offline upload's (or the end of an event's) WeChat consumes go as one
message per chunk of redemptions; each code is still consumed exactly once, a chunk run twice or
retried after a partial failure redoes only what is not settled, and quota refusals stay
deferrals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dramatiq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api import create_app
from cardpipe.db import session_scope
from cardpipe.outbound import deferral_ms
from cardpipe.runtime import credential_store
from cardpipe.services import outbox, redemption_sync, redemptions
from cardpipe.services.redemption_sync import queue_consumes, sync_consumes
from cardpipe.services.scan_answers import Scan
from models import ConsumeSync, OutboxMessage, Redemption
from tests.redemptions.conftest import ADMIN, GateEvent, TicketRef, nonce, redemption_rows, wait_until
from wechat.errors import BusinessError, DailyQuotaError
from wechat.fake import FakeWeChatControl
from workers.redemptions import consume_redeemed_codes

CONSUME = "/card/code/consume"


def redeemed(gate_event: GateEvent, tickets: list[TicketRef]) -> list[int]:
    """The tickets let in at a gate (no message queued): their redemption ids."""
    return [redemptions.redeem_scan(Scan(t.code, "north-1", nonce())).redemption_id or 0 for t in tickets]


def consumes_at_fake(gate_event: GateEvent) -> int:
    stats = gate_event.world.fake.stats(gate_event.world.oa_appid)
    return int(stats["calls_by_appid"].get(gate_event.world.oa_appid, {}).get(CONSUME, 0))


def settled(ids: list[int]) -> list[str]:
    """Each redemption's consume state, in the order of ``ids``."""
    with session_scope() as session:
        rows = session.execute(select(Redemption.id, Redemption.consume_sync).where(Redemption.id.in_(ids)))
        states = {row.id: row.consume_sync for row in rows}
    return [states[i] for i in ids]


def open_intents() -> tuple[int, int]:
    with session_scope() as session:
        return outbox.open_count(session)


def test_consumes_are_queued_one_intent_per_chunk(gate_event: GateEvent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redemption_sync, "CONSUME_CHUNK", 2)
    with session_scope() as session:
        intents = queue_consumes(session.connection(), consume_redeemed_codes.actor_name, [7, 8, 9, 10, 11])
        assert queue_consumes(session.connection(), consume_redeemed_codes.actor_name, []) == []
    with session_scope() as session:
        stored = session.execute(select(OutboxMessage.actor, OutboxMessage.args).order_by(OutboxMessage.id)).all()
    assert [i.args for i in intents] == [[[7, 8]], [[9, 10]], [[11]]]
    assert [(actor, json.loads(args)) for actor, args in stored] == [
        ("consume_redeemed_codes", [[7, 8]]),
        ("consume_redeemed_codes", [[9, 10]]),
        ("consume_redeemed_codes", [[11]]),
    ]


def test_a_chunk_consumes_each_code_once_and_running_it_again_does_nothing(gate_event: GateEvent) -> None:
    tickets = gate_event.claimed_in_wechat(4)
    ids = redeemed(gate_event, tickets)

    first = sync_consumes(ids, credential_store().card_api)
    again = sync_consumes(ids, credential_store().card_api)

    assert first == dict.fromkeys(ids, ConsumeSync.DONE) and again == {}
    assert {gate_event.user_card_status(t.code) for t in tickets} == {"CONSUMED"}
    assert gate_event.consume_pushes() == {t.code: 1 for t in tickets}
    assert [(r.consume_attempts, r.consume_in_doubt) for r in redemption_rows()] == [(1, 0)] * 4


def test_a_quota_refusal_stops_the_chunk_and_the_retry_redoes_only_the_rest(
    gate_event: GateEvent, fake: FakeWeChatControl
) -> None:
    """45009 after two consumes: the chunk stops there with the quota error (a deferral for the
    quota-aware retries, not a failure); once the quota is back, the retry consumes the other
    three, and the first two are not sent again."""
    appid = gate_event.world.oa_appid
    tickets = gate_event.claimed_in_wechat(5)
    ids = redeemed(gate_event, tickets)
    fake.set_quota(appid, CONSUME, 2)

    with pytest.raises(DailyQuotaError) as refused:
        sync_consumes(ids, credential_store().card_api)

    assert deferral_ms(refused.value) is not None
    assert settled(ids) == [ConsumeSync.DONE] * 2 + [ConsumeSync.PENDING] * 3
    fake.set_quota(appid, CONSUME, None)
    credential_store().guard.unblock(appid)
    calls_before = consumes_at_fake(gate_event)

    assert sync_consumes(ids, credential_store().card_api) == dict.fromkeys(ids[2:], ConsumeSync.DONE)
    assert consumes_at_fake(gate_event) - calls_before == 3
    assert gate_event.consume_pushes() == {t.code: 1 for t in tickets}


def test_one_code_wechat_refuses_does_not_hold_the_others_back(gate_event: GateEvent, fake: FakeWeChatControl) -> None:
    tickets = gate_event.claimed_in_wechat(3)
    ids = redeemed(gate_event, tickets)
    fake.inject_errcode(CONSUME, 40078, count=1, appid=gate_event.world.oa_appid)

    with pytest.raises(BusinessError):
        sync_consumes(ids, credential_store().card_api)

    assert settled(ids) == [ConsumeSync.PENDING, ConsumeSync.DONE, ConsumeSync.DONE]
    assert sync_consumes(ids, credential_store().card_api) == {ids[0]: ConsumeSync.DONE}
    assert gate_event.consume_pushes() == {t.code: 1 for t in tickets}


@pytest.fixture
def client(gate_event: GateEvent, broker_worker: dramatiq.Worker, fast_retries: None) -> Iterator[TestClient]:
    with TestClient(create_app()) as client:
        yield client


def test_an_offline_upload_is_consumed_in_chunks_and_its_intents_dropped(
    client: TestClient, gate_event: GateEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redemption_sync, "CONSUME_CHUNK", 2)
    made = client.post(f"/v1/admin/events/{gate_event.event_id}/checkin-lists", json={"name": "main"}, headers=ADMIN)
    gate = client.post(
        f"/v1/admin/events/{gate_event.event_id}/checkin-lists/{made.json()['id']}/gates",
        json={"name": "offline"},
        headers=ADMIN,
    ).json()
    tickets = gate_event.claimed_in_wechat(5)
    at = datetime.now(UTC) - timedelta(minutes=5)
    scans = [
        {"nonce": nonce(), "code": t.code, "scanned_at": (at + timedelta(seconds=n)).isoformat(), "result": "ok"}
        for n, t in enumerate(tickets)
    ]

    answer = client.post("/v1/gate/scans", json={"scans": scans}, headers={"Authorization": f"Bearer {gate['token']}"})

    assert answer.status_code == 200 and answer.json()["recorded"] == 5
    wait_until(lambda: all(r.consume_sync == ConsumeSync.DONE for r in redemption_rows()), what="chunks consumed")
    assert gate_event.consume_pushes() == {t.code: 1 for t in tickets}
    wait_until(lambda: open_intents() == (0, 0), what="intents dropped")
