"""The ops endpoints and the dlq command against the real broker."""

from __future__ import annotations

import time
from collections.abc import Iterator

import dramatiq
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api import create_app
from cardpipe.cli import app as cli
from tests.conftest import ADMIN_TOKEN
from workers.broker import broker

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dramatiq.actor(queue_name="maintenance", max_retries=0, actor_name="tests_ops_always_fails")
def always_fails(order: int) -> None:
    raise RuntimeError(f"boom {order}")


@pytest.fixture
def dead_letter(redis_url: str) -> Iterator[None]:
    """One message in the maintenance dead-letter queue."""
    broker.flush_all()
    worker = dramatiq.Worker(broker, queues={"maintenance"}, worker_timeout=100, worker_threads=1)
    worker.start()
    always_fails.send(7)
    deadline = time.monotonic() + 10
    while not broker.client.zcard("dramatiq:maintenance.XQ"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker.stop()
    yield
    broker.flush_all()


@pytest.fixture
def client(redis_url: str) -> Iterator[TestClient]:
    with TestClient(create_app()) as client:
        yield client


def test_queues_need_the_admin_token(client: TestClient) -> None:
    assert client.get("/ops/queues").status_code == 401


def test_queues_and_dead_letters_requeue_over_http(client: TestClient, dead_letter: None) -> None:
    body = client.get("/ops/queues", headers=ADMIN).json()
    maintenance = next(q for q in body["queues"] if q["name"] == "maintenance")
    assert maintenance["dead"] == 1
    (letter,) = client.get("/ops/dead-letters", headers=ADMIN).json()
    assert letter["actor"] == "tests_ops_always_fails" and "RuntimeError: boom 7" in letter["error"]
    url = f"/ops/dead-letters/maintenance/{letter['redis_id']}/requeue"
    assert client.post(url, headers=ADMIN).json() == {"count": 1}
    assert client.post(url, headers=ADMIN).status_code == 404
    assert broker.client.llen("dramatiq:maintenance") == 1
    assert client.get("/ops/dead-letters?queue=nope", headers=ADMIN).status_code == 404


def test_dlq_command_lists_and_purges(dead_letter: None) -> None:
    runner = CliRunner()
    listed = runner.invoke(cli, ["dlq", "list"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0 and "tests_ops_always_fails" in listed.output
    assert runner.invoke(cli, ["dlq", "purge", "nope"]).exit_code == 2
    purged = runner.invoke(cli, ["dlq", "purge", "maintenance"])
    assert purged.exit_code == 0 and "discarded 1" in purged.output


def test_metrics_export_queues_actors_tickets_and_inbox(client: TestClient, dead_letter: None, engine: object) -> None:
    assert client.get("/metrics").status_code == 401
    text = client.get("/metrics", headers=ADMIN).text
    assert 'cardpipe_queue_dead{queue="maintenance"} 1.0' in text
    assert 'cardpipe_actor_messages_total{actor="tests_ops_always_fails",outcome="failed"}' in text
    assert "cardpipe_inbox_unprocessed 0.0" in text
    assert "cardpipe_tickets" in text
