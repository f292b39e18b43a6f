"""The per-minute ops samples: what a scripted launch minute records, once per minute, bounded,
and what the history endpoint and /metrics make of them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session

from api import create_app
from cardpipe.redis_values import as_scored
from cardpipe.routes.ops import page_language
from cardpipe.services import ops_history
from cardpipe.services.queues import QueueMonitor
from tests.conftest import ADMIN_TOKEN
from tests.ops.launch_minutes import APPID, SCRIPT, play
from workers.broker import broker

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def clean_broker(redis_url: str) -> Iterator[None]:
    broker.flush_all()
    yield
    broker.flush_all()


@pytest.fixture
def client(redis_url: str) -> Iterator[TestClient]:
    with TestClient(create_app()) as client:
        yield client


def test_a_scripted_launch_is_charted_minute_by_minute(session: Session, clean_broker: None) -> None:
    now = time.time()
    launch = play(session, now=now)
    recorded = ops_history.history(broker.client, minutes=5, now=now)
    assert recorded.minutes[-3:] == launch.minute_ends
    event = str(launch.event_id)
    series = recorded.series
    assert series["claims"][event][-3:] == [float(m.claims) for m in SCRIPT]
    assert series["confirmations"][event][-3:] == [float(len(m.confirmation_lags_s)) for m in SCRIPT]
    assert series["redemptions"][event][-3:] == [0.0, 1.0, 2.0]
    assert series["inside_now"][event][-3:] == [0.0, 1.0, 3.0]
    # Nearest-rank quantiles of each minute's lags.
    assert series["confirmation_lag_s"]["p50"][-3:] == [1.0, 4.0, 5.0]
    assert series["confirmation_lag_s"]["p99"][-3:] == [1.0, 30.0, 50.0]
    # A running total becomes per-minute increases; the first sampled minute has no "before".
    assert series["wechat_errors"]["40001"][-3:] == [None, 3.0, 1.0]
    # Minutes before the launch were never sampled: unknown, not zero.
    assert series["claims"][event][:2] == [None, None]
    token_left = series["credential_expires_in_s"][f"{APPID} access_token"][-1]
    assert token_left is not None and 80 * 60 < token_left < 92 * 60


def test_each_minute_is_sampled_once_and_the_history_stays_bounded(
    session: Session, clean_broker: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monitor = QueueMonitor(broker)
    redis = broker.client
    minute = ops_history.minute_of(time.time())
    assert ops_history.record_sample(session, redis, monitor, now=minute + 1)
    assert not ops_history.record_sample(session, redis, monitor, now=minute + 30)
    assert redis.zcard(ops_history.SAMPLES_KEY) == 1
    monkeypatch.setattr(ops_history, "KEPT_MINUTES", 3)
    for back in range(1, 6):
        ops_history.record_sample(session, redis, monitor, now=minute - 60 * back + 1)
    kept = [int(score) for _, score in as_scored(redis.zrange(ops_history.SAMPLES_KEY, 0, -1, withscores=True))]
    assert kept == [minute - 120, minute - 60, minute]


def test_queue_depth_is_sampled_from_the_broker(session: Session, clean_broker: None) -> None:
    from workers.credentials import refresh_all_credentials

    for _ in range(3):
        refresh_all_credentials.send()
    minute = ops_history.minute_of(time.time())
    ops_history.record_sample(session, broker.client, QueueMonitor(broker), now=minute + 1)
    recorded = ops_history.history(broker.client, minutes=1, now=minute + 1)
    assert recorded.series["queue_ready"]["maintenance"] == [3.0]
    age = recorded.series["queue_oldest_age_s"]["maintenance"][0]
    assert age is not None and age >= 0


def test_history_endpoint_and_metrics_after_a_scripted_launch(
    client: TestClient, session: Session, clean_broker: None
) -> None:
    launch = play(session, now=time.time())
    assert client.get("/ops/history").status_code == 401
    assert client.get("/ops/history?minutes=0", headers=ADMIN).status_code == 422
    body = client.get("/ops/history?minutes=60", headers=ADMIN).json()
    assert len(body["minutes"]) == 60
    assert body["series"]["claims"][str(launch.event_id)][-3:] == [2.0, 5.0, 9.0]
    kinds = {c["kind"]: c for c in body["credentials"]}
    assert kinds["card_ticket"]["version"] == 4 and kinds["card_ticket"]["rotated_at"]
    assert "value" not in kinds["card_ticket"]

    metrics = _samples(client.get("/metrics", headers=ADMIN).text)
    assert metrics[("cardpipe_confirmation_lag_seconds_bucket", (("le", "5.0"),))] == 6
    assert metrics[("cardpipe_confirmation_lag_seconds_bucket", (("le", "+Inf"),))] == 9
    assert metrics[("cardpipe_confirmation_lag_seconds_sum", ())] == 106
    assert metrics[("cardpipe_wechat_errors_total", (("appid", APPID), ("errcode", "40001")))] == 4
    assert metrics[("cardpipe_event_received_tickets", (("event_id", str(launch.event_id)),))] == 16
    card_ticket = (("appid", APPID), ("kind", "card_ticket"))
    assert metrics[("cardpipe_credential_refresh_failing_seconds", card_ticket)] == 0
    assert 95 * 60 < metrics[("cardpipe_credential_expires_in_seconds", card_ticket)] <= 100 * 60
    assert metrics[("cardpipe_account_quota_blocked", (("appid", APPID),))] == 0
    assert metrics[("cardpipe_scheduler_leader", ())] == 0
    assert metrics[("cardpipe_ops_last_sample_timestamp_seconds", ())] == launch.minute_ends[-1]
    assert metrics[("cardpipe_queue_live_workers", (("queue", "claims"),))] == 0


def _samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


@pytest.mark.parametrize(
    ("chosen", "remembered", "accept", "expected"),
    [
        (None, None, "zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        (None, None, "en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        (None, None, "fr-FR,zh-TW;q=0.5", "zh"),
        (None, None, "de", "en"),
        (None, None, None, "en"),
        (None, "zh", "en-US", "zh"),
        ("en", "zh", "zh-CN", "en"),
        ("xx", None, "zh-CN", "zh"),
        (None, None, "zh;q=0, en;q=0.1", "en"),
    ],
)
def test_the_page_language_follows_the_switch_then_the_browser(
    chosen: str | None, remembered: str | None, accept: str | None, expected: str
) -> None:
    assert page_language(chosen, remembered, accept) == expected


def test_the_page_is_served_in_the_browsers_language_with_a_remembered_switch(client: TestClient) -> None:
    assert '<html lang="zh">' in client.get("/ops", headers={"Accept-Language": "zh-CN,zh;q=0.9"}).text
    switched = client.get("/ops?lang=en", headers={"Accept-Language": "zh-CN"})
    assert '<html lang="en">' in switched.text and switched.cookies.get("cardpipe-lang") == "en"
    script = client.get("/ops/static/ops.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert client.get("/ops/static/ops-i18n.js").status_code == 200
    page = client.get("/ops").text
    # CSP-friendly: no inline script or style, no inline event handler, nothing from a CDN.
    assert "<script>" not in page and "<style>" not in page and " onclick=" not in page and "https://" not in page
