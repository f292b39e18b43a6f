"""Benchmark: the whole claim funnel of a launch, on the production processes.

PostgreSQL (a scratch database) and a Redis of the benchmark's own (so its CPU is this run's
alone); ``cardpipe api --workers N``, ``cardpipe worker``, ``cardpipe scheduler`` and
``cardpipe fake-wechat`` started as compose starts them; the organiser's steps through the admin
API (accounts, event and card, order import with one to five orders per buyer, pre-issue). Then
the users (``bench/launch_users.py``, a lean asyncio generator in its own process) log in, claim
all their orders with one ``/v1/claims``, ``wx.addCard`` at the fake — which pushes
``user_get_card`` to the api, as WeChat does — and post the result. A ticket is *settled* once
both signals (client result and WeChat push) are recorded on it.

Three measured runs:

1. baseline: ``GET /healthz`` from the same generator, for the server CPU of a trivial request;
2. saturation: the first users all at once (``--concurrency`` in flight): settled tickets/s, and
   CPU per settled ticket per process group, read from ``/proc`` — server (api, workers,
   scheduler), database (this database's PostgreSQL backends and the Redis server), the fake and
   the generator apart;
3. steady: the rest arriving at a steady rate of about half the saturation rate: p50/p99 of each
   client request and the confirmation lag (``wx.addCard`` answered → both signals recorded).

Then every ticket is checked to be claimed by both signals. Usage::

    .venv/bin/python bench/launch.py [--users 1000] [--steady-seconds 30] [--api-workers 2]

``BENCH_PG_URL`` names the PostgreSQL server the scratch database is made on. The last line is
JSON with ``settled_per_s``, ``server_cpu_ms_per_ticket``, ``db_cpu_ms_per_ticket``,
``confirm_lag_p99_ms``, ``client_p99_ms`` and the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from cpu_meter import CpuMeter, spent
from scratch_db import drop_database, scratch_database

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ADMIN_TOKEN = "bench-admin-token"
SETTLE_TIMEOUT_S = 180
HEALTHZ_REQUESTS = 5000
SERVER_GROUPS = ("api", "worker", "scheduler")


def run_users(plan: dict[str, Any], concurrency: int) -> dict[str, Any]:
    """The generator in its own process; its CPU is read from its own rusage."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(plan, handle)
    try:
        command = [sys.executable, __file__, "--users-plan", handle.name, "--concurrency", str(concurrency)]
        process = psutil.Popen(command, stdout=subprocess.PIPE, text=True)
        output, _ = process.communicate()
        if process.returncode:
            raise RuntimeError(f"the load generator exited with {process.returncode}")
        return dict(json.loads(output.strip().splitlines()[-1]))
    finally:
        os.unlink(handle.name)


def main(args: argparse.Namespace) -> None:
    from cryptography.fernet import Fernet

    admin_url = os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL)
    database_url = scratch_database(admin_url, "cardpipe_bench_launch")
    data_dir = Path(tempfile.mkdtemp(prefix="cardpipe-bench-launch-"))
    redis_port = _free_port()
    redis_server = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=data_dir,
        stdout=subprocess.DEVNULL,
    )
    os.environ.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "CARDPIPE_SECRET_KEYS": Fernet.generate_key().decode(),
        }
    )
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import create_engine

    from cardpipe.demo.stack import running_stack

    engine = create_engine(database_url, pool_size=1)
    try:
        _wait_redis(redis_port)
        with running_stack(
            data_dir,
            admin_token=ADMIN_TOKEN,
            workers=args.worker_processes,
            threads=args.worker_threads,
            api_workers=args.api_workers,
        ) as stack:
            figures = measure(args, stack, engine, redis_server.pid, redis_port)
    finally:
        engine.dispose()
        redis_server.terminate()
        redis_server.wait(timeout=15)
        drop_database(admin_url, database_url)
    print(json.dumps(figures))


def measure(args: argparse.Namespace, stack: Any, engine: Any, redis_pid: int, redis_port: int) -> dict[str, Any]:
    from sqlalchemy import text

    from cardpipe.demo.scenario import Demo

    demo = Demo(stack, ADMIN_TOKEN, 0)
    demo.register_accounts()
    demo.create_event()
    chooser = random.Random(args.seed)
    steady_users = max(1, int(args.steady_seconds * args.steady_users_per_s_guess))
    everyone = _import_orders(demo, args.users + steady_users * 4, chooser)
    started = time.perf_counter()
    demo.preissue()
    print(
        f"{sum(len(o) for _, o in everyone)} orders of {len(everyone)} buyers imported and pre-issued "
        f"in {time.perf_counter() - started:.1f}s"
    )

    backends = text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")

    def database_pids() -> list[int]:
        with engine.connect() as conn:
            return list(conn.execute(backends).scalars())

    groups = {name: [process.pid] for name, process in stack.processes.items()}
    groups["redis"] = [redis_pid]
    meter = CpuMeter(groups, database_pids).start()
    base = {
        "api_port": int(stack.api_url.rsplit(":", 1)[1]),
        "fake_port": int(stack.fake_url.rsplit(":", 1)[1]),
        "mp_appid": demo.mp_appid,
    }
    try:
        before = meter.totals()
        healthz = run_users({**base, "users": [], "rate": 0, "healthz": HEALTHZ_REQUESTS}, args.concurrency)
        baseline = spent(before, meter.totals())
        baseline_ms = sum(baseline.get(g, 0.0) for g in SERVER_GROUPS) * 1000 / healthz["requests"]["healthz"]["n"]
        print(f"baseline GET /healthz: {HEALTHZ_REQUESTS} requests, server CPU {baseline_ms:.3f} ms each")

        saturating, rest = everyone[: args.users], everyone[args.users :]
        before, load_before = meter.totals(), _database_load(engine, redis_port)
        decrypts_before = _decrypt_calls(demo)
        sat_started = time.time()
        sat = run_users({**base, "users": saturating, "rate": 0}, args.concurrency)
        sat_tickets, sat_settled_at = _settle(engine, demo.event_id, saturating)
        sat_cpu = spent(before, meter.totals())
        load = {k: (v - load_before[k]) / sat_tickets for k, v in _database_load(engine, redis_port).items()}
        decrypts = (_decrypt_calls(demo) - decrypts_before) / sat_tickets
        settled_per_s = sat_tickets / max(1e-6, sat_settled_at - sat_started)
        server_ms = sum(sat_cpu.get(g, 0.0) for g in SERVER_GROUPS) * 1000 / sat_tickets
        db_ms = (sat_cpu.get("postgres", 0.0) + sat_cpu.get("redis", 0.0)) * 1000 / sat_tickets
        print(
            f"saturation: {len(saturating)} users, {sat_tickets} tickets settled in "
            f"{sat_settled_at - sat_started:.1f}s = {settled_per_s:.0f} tickets/s; errors {sat['errors'] or 'none'}"
        )
        print(
            f"per settled ticket: {load['pg_transactions']:.1f} PostgreSQL transactions, "
            f"{load['pg_rows_written']:.1f} rows written, {load['pg_connections']:.3f} connections opened, "
            f"{load['redis_commands']:.1f} Redis commands, "
            f"{decrypts:.2f} code/decrypt calls (results applied before their push)"
        )
        print(
            "CPU ms per settled ticket: "
            + ", ".join(f"{group} {seconds * 1000 / sat_tickets:.2f}" for group, seconds in sorted(sat_cpu.items()))
        )

        tickets_per_user = sat_tickets / len(saturating)
        rate = 0.5 * settled_per_s / tickets_per_user
        steady = rest[: max(1, int(rate * args.steady_seconds))]
        steady_run = run_users({**base, "users": steady, "rate": rate}, args.concurrency)
        steady_tickets, _ = _settle(engine, demo.event_id, steady)
        lags = _confirmation_lags(engine, demo.event_id, steady_run["added_at"])
    finally:
        meter.stop()
    requests = steady_run["requests"]
    print(
        f"steady: {len(steady)} users at {rate:.1f} users/s (~{rate * tickets_per_user:.0f} tickets/s), "
        f"{steady_tickets} tickets settled; generator late p99 {steady_run['late_p99_ms']:.0f} ms; "
        f"errors {steady_run['errors'] or 'none'}"
    )
    for kind, figures in sorted(requests.items()):
        print(f"  {kind}: n={figures['n']} p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms")
    print(f"  confirmation lag (addCard → both signals): p50 {lags['p50_ms']:.0f} ms, p99 {lags['p99_ms']:.0f} ms")
    print(f"server CPU per settled ticket / per /healthz request: {server_ms / baseline_ms:.1f}")
    wrong = _wrong_states(engine, demo.event_id, len(saturating) + len(steady), saturating + steady)
    if wrong:
        print(f"WRONG: {wrong}")
    return {
        "settled_per_s": round(settled_per_s, 1),
        "server_cpu_ms_per_ticket": round(server_ms, 3),
        "db_cpu_ms_per_ticket": round(db_ms, 3),
        "pg_transactions_per_ticket": round(load["pg_transactions"], 2),
        "redis_commands_per_ticket": round(load["redis_commands"], 2),
        "pg_connections_per_ticket": round(load["pg_connections"], 3),
        "decrypts_per_ticket": round(decrypts, 3),
        "fake_cpu_ms_per_ticket": round(sat_cpu.get("fake-wechat", 0.0) * 1000 / sat_tickets, 3),
        "confirm_lag_p50_ms": lags["p50_ms"],
        "confirm_lag_p99_ms": lags["p99_ms"],
        "client_p99_ms": max(figures["p99_ms"] for figures in requests.values()),
        "baseline_server_cpu_ms_per_request": round(baseline_ms, 4),
        "tickets_checked": sat_tickets + steady_tickets,
        "wrong": wrong,
    }


def _database_load(engine: Any, redis_port: int) -> dict[str, float]:
    """Counters of this run's database and Redis: transactions, rows written, connections opened
    (a pool too small for its process's concurrency opens and closes one per overflow), commands."""
    import redis
    from sqlalchemy import text

    with engine.connect() as conn:
        commits, written, sessions = conn.execute(
            text(
                "SELECT xact_commit + xact_rollback, tup_inserted + tup_updated + tup_deleted, sessions "
                "FROM pg_stat_database WHERE datname = current_database()"
            )
        ).one()
    client = redis.Redis(port=redis_port)
    commands = client.info("stats")["total_commands_processed"]
    client.close()
    return {
        "pg_transactions": float(commits),
        "pg_rows_written": float(written),
        "pg_connections": float(sessions),
        "redis_commands": float(commands),
    }


def _decrypt_calls(demo: Any) -> int:
    """The fake's count of ``code/decrypt`` calls: a result applied before its ticket's push."""
    calls = demo.fake.stats(demo.oa_appid)["calls_by_appid"].get(demo.oa_appid, {})
    return sum(n for path, n in calls.items() if "code/decrypt" in path)


def _import_orders(demo: Any, users: int, chooser: random.Random) -> list[tuple[str, list[str]]]:
    """``users`` buyers at the fake, each with one to five one-ticket orders, imported as CSV."""
    rows = ["order_no,openid,unionid,ticket_count"]
    everyone = []
    for index in range(users):
        person = demo.fake.add_person(f"launch-{demo.event_id}-{index}")
        numbers = [f"L{index:06d}-{n}" for n in range(chooser.randint(1, 5))]
        everyone.append((person["name"], numbers))
        rows += [f"{n},{person['openids'][demo.mp_appid]},,1" for n in numbers]
    url = demo.stack.api_url + f"/v1/admin/events/{demo.event_id}/orders"
    response = demo.admin.post(url, data="\n".join(rows).encode(), headers={"Content-Type": "text/csv"})
    response.raise_for_status()
    return everyone


def _settle(engine: Any, event_id: int, users: list[tuple[str, list[str]]]) -> tuple[int, float]:
    """Wait until every ticket of these users' orders has both signals; the count and when the
    last one got its second signal (wall clock)."""
    from sqlalchemy import bindparam, text

    order_nos = [n for _, numbers in users for n in numbers]
    query = text(
        "SELECT count(*), extract(epoch FROM max(t.updated_at)) FROM tickets t JOIN orders o ON o.id = t.order_id "
        "WHERE o.event_id = :e AND o.order_no IN :nos AND t.confirmed_by_client AND t.confirmed_by_wechat"
    ).bindparams(bindparam("nos", expanding=True))
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        with engine.connect() as conn:
            count, last = conn.execute(query, {"e": event_id, "nos": order_nos}).one()
        if count >= len(order_nos) or time.monotonic() > deadline:
            return int(count), float(last or time.time())
        time.sleep(0.2)


def _confirmation_lags(engine: Any, event_id: int, added_at: dict[str, float]) -> dict[str, float]:
    from sqlalchemy import bindparam, text

    query = text(
        "SELECT o.order_no, extract(epoch FROM t.updated_at) FROM tickets t JOIN orders o ON o.id = t.order_id "
        "WHERE o.event_id = :e AND o.order_no IN :nos AND t.confirmed_by_client AND t.confirmed_by_wechat"
    ).bindparams(bindparam("nos", expanding=True))
    with engine.connect() as conn:
        rows = conn.execute(query, {"e": event_id, "nos": list(added_at)}).all()
    lags = sorted(max(0.0, float(at) - added_at[order_no]) for order_no, at in rows)
    if not lags:
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    return {
        "p50_ms": round(lags[len(lags) // 2] * 1000, 1),
        "p99_ms": round(lags[min(len(lags) - 1, int(0.99 * len(lags)))] * 1000, 1),
    }


def _wrong_states(engine: Any, event_id: int, users: int, claimed: list[tuple[str, list[str]]]) -> dict[str, int]:
    """Tickets of the users who claimed that are not claimed by both signals, and any other
    ticket of the event that left ``ready`` (no one else claimed)."""
    from sqlalchemy import bindparam, text

    numbers = [n for _, orders in claimed for n in orders]
    query = text(
        "SELECT (o.order_no IN :nos) AS claimer, t.state, t.confirmed_by_client AND t.confirmed_by_wechat, count(*) "
        "FROM tickets t JOIN orders o ON o.id = t.order_id WHERE o.event_id = :e GROUP BY 1, 2, 3"
    ).bindparams(bindparam("nos", expanding=True))
    wrong: dict[str, int] = {}
    with engine.connect() as conn:
        for claimer, state, both, count in conn.execute(query, {"e": event_id, "nos": numbers}):
            if (claimer and (state != "claimed" or not both)) or (not claimer and state not in ("ready", "pending")):
                wrong[f"{'claimer' if claimer else 'bystander'} {state} both={both}"] = int(count)
    return wrong


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_redis(port: int) -> None:
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError("the benchmark's redis-server did not start")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000, help="users of the saturation run")
    parser.add_argument("--steady-seconds", type=float, default=30.0)
    parser.add_argument("--steady-users-per-s-guess", type=float, default=40.0, help="sizes the steady run's import")
    parser.add_argument("--concurrency", type=int, default=64, help="users in flight at saturation")
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--worker-processes", type=int, default=2)
    parser.add_argument("--worker-threads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--users-plan", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.users_plan:
        from launch_users import run

        run(arguments.users_plan, arguments.concurrency)
    else:
        main(arguments)
