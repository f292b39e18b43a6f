"""Benchmark: an offline gate's snapshot of a 100k-ticket event, and the merge of 10k scans it
decided offline.

Seeds one event with ``--tickets`` claimed tickets and a gate of a single-use list in a scratch
PostgreSQL database, then, through the real app under uvicorn (so the figures include routing,
validation and JSON; the WeChat consumes an upload queues are sent after its answer, as in
production):

1. **snapshot**: ``GET /v1/gate/snapshot``: its size on the wire and the time to build it;
   baseline: the bare query reading every ticket's code and state (the floor under any snapshot);
2. **sync**: ``--scans`` offline entries (distinct tickets) uploaded to ``POST /v1/gate/scans`` in
   batches of 2000: the time to merge them all; baseline: inserting the same number of
   redemption rows with one multi-row INSERT (the floor of recording them). A second upload of
   the same scans (all duplicates) shows the idempotency check's cost.

Usage::

    .venv/bin/python bench/gate_offline.py [--tickets 100000] [--scans 10000] [--policy single|multi]

With ``single`` (the default) every merged entry consumes its ticket and queues its WeChat
consume (one message per chunk of redemptions); ``multi`` merges the same entries into a
multi-entry list (no consumes).

``BENCH_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``) is the
server the scratch database is created on; ``BENCH_REDIS_URL`` (default
``redis://127.0.0.1:6379/14``) receives the queued WeChat consumes (flushed before and after).
The last line printed is ``{"snapshot_bytes": …, "snapshot_s": …, "snapshot_baseline_s": …,
"sync_s": …, "sync_baseline_s": …, "resync_s": …}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from redeem import _free_port, _start_server
from scratch_db import drop_database, scratch_database

from cardpipe import clock

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
BATCH = 2000


def _seed(tickets: int, policy: str) -> tuple[int, str, list[str]]:
    """One event with claimed tickets and a gate of a single-use list: (event id, gate token, codes)."""
    from sqlalchemy import insert

    from cardpipe.db import session_scope
    from cardpipe.services import accounts
    from cardpipe.services.checkin import gates, lists
    from cardpipe.services.codes import new_codes
    from models import Event, ListPolicy, Order, Ticket, TicketState
    from models.event import UNAMBIGUOUS_ALPHABET

    tag = uuid.uuid4().hex[:10]
    codes = new_codes(tickets, 12, UNAMBIGUOUS_ALPHABET)
    with session_scope() as session:
        oa = accounts.upsert_official_account(
            session, accounts.OfficialAccountInput(appid=f"wxoa{tag}", app_secret=f"s-{tag}", server_token="t0k")
        )
        mp = accounts.upsert_mini_program(session, f"wxmp{tag}", f"mp-{tag}", oa.appid)
        event = Event(name="bench", official_account_id=oa.id, mini_program_id=mp.id, card_id=f"pBENCH{tag}")
        session.add(event)
        session.flush()
        order = Order(event_id=event.id, order_no="B1", mp_openid="o-bench", ticket_count=tickets)
        session.add(order)
        session.flush()
        common = {"event_id": event.id, "order_id": order.id, "card_id": event.card_id, "state": TicketState.CLAIMED}
        session.execute(insert(Ticket), [{**common, "seq": n, "code": c} for n, c in enumerate(codes, start=1)])
        main = lists.create_list(session, event.id, lists.ListSettings("main", policy=ListPolicy(policy)))
        token = gates.add_gate(session, event.id, main.id, "offline-gate").token
        return event.id, token, codes


def _queued_consumes(queue: Any) -> tuple[int, int]:
    """Consume messages on the ``wechat`` queue, and how many redemptions they carry."""
    messages = [json.loads(body) for body in queue.hvals("dramatiq:wechat.msgs")]
    carried = sum(len(m["args"][0]) if isinstance(m["args"][0], list) else 1 for m in messages)
    return len(messages), carried


T = TypeVar("T")


def _timed(action: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = action()
    return value, time.perf_counter() - started


def main(args: argparse.Namespace) -> None:
    import redis
    from cryptography.fernet import Fernet

    admin_url = os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL)
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    database_url = scratch_database(admin_url, "cardpipe_bench_gate")
    env_values = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CARDPIPE_SECRET_KEYS": Fernet.generate_key().decode(),
        "CARDPIPE_DATA_DIR": tempfile.mkdtemp(prefix="cardpipe-bench-"),
    }
    os.environ.update(env_values)
    sys.path.insert(0, str(ROOT))
    import requests
    from sqlalchemy import insert, select

    from cardpipe.db import reset, session_scope
    from cardpipe.migrate import upgrade
    from models import Redemption, Ticket

    upgrade(database_url)
    queue = redis.Redis.from_url(redis_url)
    queue.flushdb()
    server = None
    try:
        (event_id, token, codes), seeded_s = _timed(lambda: _seed(args.tickets, args.policy))
        print(f"seeded {len(codes)} claimed tickets in {seeded_s:.1f}s")
        headers = {"Authorization": f"Bearer {token}"}
        port = _free_port()
        server = _start_server(port, 1, {**os.environ, **env_values})
        base = f"http://127.0.0.1:{port}"
        with requests.Session() as client:

            def read_all() -> int:
                with session_scope() as session:
                    return len(
                        session.execute(select(Ticket.code, Ticket.state).where(Ticket.event_id == event_id)).all()
                    )

            _, baseline_s = _timed(read_all)
            response, snapshot_s = _timed(lambda: client.get(f"{base}/v1/gate/snapshot", headers=headers))
            assert response.status_code == 200, response.text
            size = len(response.content)
            print(
                f"snapshot of {len(codes)} tickets: {size / 1e6:.2f} MB in {snapshot_s:.2f}s "
                f"(baseline, reading their codes and states: {baseline_s:.2f}s; ratio {snapshot_s / baseline_s:.1f}x)"
            )

            at = clock.now() - timedelta(hours=1)
            scans = [
                {
                    "nonce": uuid.uuid4().hex,
                    "code": code,
                    "direction": "entry",
                    "scanned_at": (at + timedelta(milliseconds=n)).isoformat(),
                    "result": "ok",
                }
                for n, code in enumerate(codes[: args.scans])
            ]

            def upload() -> tuple[int, int]:
                recorded = duplicates = 0
                for start in range(0, len(scans), BATCH):
                    answer = client.post(
                        f"{base}/v1/gate/scans", json={"scans": scans[start : start + BATCH]}, headers=headers
                    )
                    assert answer.status_code == 200, answer.text
                    recorded += answer.json()["recorded"]
                    duplicates += answer.json()["duplicates"]
                return recorded, duplicates

            (recorded, _), sync_s = _timed(upload)
            (_, duplicates), resync_s = _timed(upload)
            assert recorded == duplicates == len(scans)

            def insert_floor() -> None:
                rows = [
                    {
                        "nonce": f"floor{n}",
                        "code": scan["code"],
                        "gate": "floor",
                        "result": "ok",
                        "consume_sync": "not_needed",
                        "consume_attempts": 0,
                        "consume_in_doubt": 0,
                        "offline": True,
                    }
                    for n, scan in enumerate(scans)
                ]
                with session_scope() as session:
                    session.execute(insert(Redemption), rows)

            _, floor_s = _timed(insert_floor)
            print(
                f"sync of {len(scans)} offline scans in batches of {BATCH}: {sync_s:.2f}s "
                f"(baseline, inserting {len(scans)} rows at once: {floor_s:.2f}s; ratio {sync_s / floor_s:.1f}x); "
                f"the same upload again (all duplicates): {resync_s:.2f}s"
            )
            time.sleep(2)
            messages, carried = _queued_consumes(queue)
            print(f"consume messages queued for WeChat (after the answers): {messages}, for {carried} redemptions")
        figures = {
            "snapshot_bytes": size,
            "snapshot_s": round(snapshot_s, 3),
            "snapshot_baseline_s": round(baseline_s, 3),
            "sync_s": round(sync_s, 3),
            "sync_baseline_s": round(floor_s, 3),
            "resync_s": round(resync_s, 3),
            "policy": args.policy,
        }
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=15)
        reset()
        drop_database(admin_url, database_url)
        queue.flushdb()
    print(json.dumps(figures))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--scans", type=int, default=10_000)
    parser.add_argument("--policy", choices=("single", "multi"), default="single")
    return parser.parse_args()


if __name__ == "__main__":
    main(parse_args())
