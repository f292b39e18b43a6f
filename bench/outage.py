"""Benchmark: how long after Redis, or PostgreSQL, comes back the last stuck piece of work is done.

Runs the real app (``cardpipe api``, ``cardpipe worker``) on a redis-server of its own and a
scratch PostgreSQL database reached through a TCP proxy the benchmark can cut, with the fake
WeChat pushing ``user_get_card`` to the api. Three phases, one event at launch:

1. baseline: ``--buyers`` buyers claim (poll, ``wx.addCard`` at the fake, result posted) with
   everything up; the figure is the time from the last result posted to the last ticket
   confirmed by both the client and WeChat (the pipeline's ordinary latency);
2. Redis: a pre-issue of ``--orders`` orders starts, Redis is killed at once, ``--buyers`` more
   buyers claim while it is away (the api stores their results and WeChat's pushes), and Redis is
   restarted *empty*; the figure is the time from Redis answering again to the pre-issue
   ``issued`` with the card's stock raised, and every stored result and push applied;
3. PostgreSQL: every database connection is dropped and new ones refused for ``--cut`` seconds
   while ``--buyers`` more buyers add their cards and report; the figure is the time from the
   database answering again to every ticket confirmed by both signals.

Counts checked at the end: tickets of the pre-issue, the card's stock, unprocessed inbox rows,
dead letters, pushes WeChat gave up on. Target: both recoveries under 10 s.

Usage::

    .venv/bin/python bench/outage.py [--buyers 60] [--orders 2000] [--cut 3]

``BENCH_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``) is the server
the scratch database is created on (never restarted: the cut is the proxy's). The last line
printed is ``{"redis_recovery_s": …, "postgres_recovery_s": …, "baseline_s": …, …}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet
from scratch_db import drop_database, scratch_database

if TYPE_CHECKING:
    from tests.claims.conftest import Buyer
    from tests.outages.harness import RedisServer, TcpProxy

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buyers", type=int, default=60)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--cut", type=float, default=3.0)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.outages.harness import RedisServer, TcpProxy

    admin_url = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    database_url = scratch_database(admin_url, "cardpipe_bench_outage")
    work = Path(tempfile.mkdtemp(prefix="cardpipe-outage-"))
    redis = RedisServer(work / "redis", appendonly=False)
    redis.start()
    os.environ.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis.url,
            "TEST_REDIS_URL": redis.url,
            "CARDPIPE_DATA_DIR": str(work / "data"),
            "CARDPIPE_SECRET_KEYS": Fernet.generate_key().decode(),
            "CARDPIPE_ADMIN_TOKENS": "test-admin-token",
            # Every simulated buyer logs in from 127.0.0.1.
            "CARDPIPE_LOGIN_LIMIT_PER_CLIENT": "1000000",
        }
    )
    from sqlalchemy.engine import make_url

    from cardpipe.migrate import upgrade

    upgrade(database_url)
    url = make_url(database_url)
    try:
        with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
            proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
            figures = run(args, redis, proxy, proxied, work)
    finally:
        redis.kill()
        drop_database(admin_url, database_url)
    print(
        f"baseline (everything up), last result to last ticket confirmed: {figures['baseline_s']:.2f} s\n"
        f"Redis restarted empty: last stuck item done {figures['redis_recovery_s']:.2f} s after it answered "
        f"({figures['redis_recovery_s'] / figures['baseline_s']:.1f}x baseline)\n"
        f"PostgreSQL cut {args.cut:.0f} s: last stuck item done {figures['postgres_recovery_s']:.2f} s after it "
        f"answered ({figures['postgres_recovery_s'] / figures['baseline_s']:.1f}x baseline; the clients had "
        f"posted their refused results again after {figures['postgres_results_reposted_s']:.2f} s)\n"
        f"counts: {json.dumps(figures['counts'])}\n"
        f"target < {TARGET_S:.0f} s: {'met' if figures['met'] else 'NOT met'}"
    )
    print(json.dumps(figures))


def run(args: argparse.Namespace, redis: RedisServer, proxy: TcpProxy, proxied_url: str, work: Path) -> dict[str, Any]:
    from cardpipe import runtime
    from cardpipe.db import session_scope
    from cardpipe.runtime import credential_store
    from cardpipe.services import accounts
    from cardpipe.settings import get_settings
    from tests.claims.conftest import make_launch
    from tests.outages import conftest as parts
    from tests.outages.harness import AppProcesses
    from tests.waiting import wait_until
    from tests.worlds import new_world
    from wechat.fake import FakeWeChatControl, FakeWeChatServer

    with FakeWeChatServer(push_timeout_s=5.0, seed=11) as server:
        os.environ["CARDPIPE_WECHAT_API_BASE"] = server.url
        get_settings.cache_clear()
        runtime.reset()
        apps = AppProcesses(work, redis_url=redis.url, database_url=proxied_url, CARDPIPE_PREISSUE_CHUNK_TICKETS="200")
        fake = FakeWeChatControl(server.url)
        try:
            apps.start_api()
            apps.start_worker(processes=1, threads=8)
            world = new_world(fake, server.url)
            with session_scope() as session:
                accounts.upsert_official_account(
                    session,
                    accounts.OfficialAccountInput(
                        appid=world.oa_appid,
                        app_secret=world.oa_secret,
                        server_token=world.server_token,
                        encoding_aes_key=world.aes_key,
                        original_id=world.original_id,
                        use_stable_token=False,
                    ),
                )
                accounts.upsert_mini_program(session, world.mp_appid, world.mp_secret, world.oa_appid)
            credential_store().card_ticket(world.oa_appid)
            launch = make_launch(world, fake, apps.api_url)
            fake.review_card(launch.card_id)
            people = parts.buyers(launch, 3 * args.buyers)
            baseline, first, second = (people[i * args.buyers : (i + 1) * args.buyers] for i in range(3))

            def settled(group: list[Buyer]) -> bool:
                return parts.unprocessed_inbox() == 0 and all(launch.settled(b) for b in group)

            # 1. baseline
            for buyer in baseline:
                assert parts.claim(launch, buyer)
            posted = time.monotonic()
            wait_until(lambda: settled(baseline), what="baseline settled", timeout_s=120)
            baseline_s = time.monotonic() - posted

            # 2. Redis lost right after a pre-issue started, with claims stored while it is away
            event_id, card_id = parts.draft_event(launch, args.orders)
            assert parts.start_preissue(launch.api, event_id).status_code == 202
            redis.kill()
            later = []
            for buyer in first:
                poll = launch.poll(buyer)
                assert poll.status_code in (200, 503), poll.text
                if poll.status_code != 200:
                    later.append(buyer)
                    continue
                answer = launch.add_card(buyer, list(poll.json()["cardList"]))
                if not parts.post_result(launch, buyer, {"errMsg": answer["errMsg"], "cardList": answer["cardList"]}):
                    later.append(buyer)
            assert not later, f"{len(later)} claims refused while Redis was away"
            redis.start(empty=True)
            back = time.monotonic()

            def preissued() -> bool:
                with session_scope() as session:
                    from models import Event

                    state = session.get_one(Event, event_id).state
                return state == "issued" and fake.card(card_id)["stock"] >= args.orders

            wait_until(lambda: preissued() and settled(first), what="Redis recovery", timeout_s=120)
            redis_recovery_s = time.monotonic() - back

            # 3. PostgreSQL away for --cut seconds while buyers add cards and report
            lists = {}
            for buyer in second:
                poll = launch.poll(buyer)
                lists[buyer.order_no] = list(poll.json()["cardList"])
            proxy.cut()
            cut_at = time.monotonic()
            reports = []
            for buyer in second:
                answer = launch.add_card(buyer, lists[buyer.order_no])
                reports.append((buyer, {"errMsg": answer["errMsg"], "cardList": answer["cardList"]}))
            time.sleep(max(0.0, args.cut - (time.monotonic() - cut_at)))
            proxy.resume()
            back = time.monotonic()
            for buyer, report in reports:
                wait_until(partial(parts.post_result, launch, buyer, report), what="a result", timeout_s=30)
            reposted_s = time.monotonic() - back
            wait_until(lambda: settled(second), what="PostgreSQL recovery", timeout_s=120)
            postgres_recovery_s = time.monotonic() - back

            from sqlalchemy import func, select

            from models import Ticket

            with session_scope() as session:
                tickets = int(session.scalar(select(func.count()).where(Ticket.event_id == event_id)) or 0)
            pushes = [p for p in fake.pushes(world.oa_appid) if p["event"] == "user_get_card"]
            counts = {
                "preissue_tickets": tickets,
                "preissue_orders": args.orders,
                "card_stock": fake.card(card_id)["stock"],
                "buyers_settled": len(people),
                "unprocessed_inbox": parts.unprocessed_inbox(),
                "dead_letters": parts.dead_letters(redis.url),
                "pushes": len(pushes),
                "pushes_not_delivered": sum(1 for p in pushes if p["status"] != "delivered"),
            }
            assert tickets == args.orders and counts["unprocessed_inbox"] == 0 and counts["dead_letters"] == 0
        finally:
            apps.stop()
            fake.close()
    return {
        "redis_recovery_s": round(redis_recovery_s, 3),
        "postgres_recovery_s": round(postgres_recovery_s, 3),
        "baseline_s": round(baseline_s, 3),
        "postgres_results_reposted_s": round(reposted_s, 3),
        "redis_ratio": round(redis_recovery_s / baseline_s, 2),
        "postgres_ratio": round(postgres_recovery_s / baseline_s, 2),
        "target_s": TARGET_S,
        "met": max(redis_recovery_s, postgres_recovery_s) < TARGET_S,
        "counts": counts,
    }


if __name__ == "__main__":
    main()
