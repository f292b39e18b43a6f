"""Benchmark: the claim poll, ``GET /v1/orders/{order_no}/claim``, under load.

Sets up N orders with a ready, signed ticket each in a scratch PostgreSQL database (real Redis,
the card ticket fetched from the fake WeChat), starts the real app under uvicorn (``--workers``
processes, the client spreading its connections over them like a load balancer), polls every
order once (the cache fill: ready → served), then loads it from a second process — a lean
asyncio HTTP/1.1 keep-alive client on uvloop, so the load generator takes as little as possible
of the cores the server shares with it (``bench/http_load.py``):

1. the same server's trivial constant endpoint (``GET /healthz``): the baseline;
2. the poll, round-robin over the N orders, each request with its buyer's session token;
3. WeChat pushes (``POST /wechat/{oa_appid}/events``, signed ``user_get_card``): their answer
   time at a steady launch-day rate, and back to back (printed, not in the JSON line).

Usage::

    .venv/bin/python bench/poll.py [--orders 2000] [--seconds 10] [--connections 32] [--workers 2]

``BENCH_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``) is the server
the scratch database is created on; ``BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/12``)
the Redis to use (keys of this run's accounts, and the ``events`` queue, which is emptied at the
end: no worker runs). The last line printed is
``{"rps": …, "p50_ms": …, "p99_ms": …, "baseline_rps": …}``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from http_load import request_line, run_load
from scratch_db import drop_database, scratch_database

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
#: Load that is measured starts after this much of each run (connections up, caches warm).
WARMUP_S = 1.0
#: Pushes timed (each stored and queued; no worker runs, the queue is dropped afterwards), over
#: as many connections as the fake WeChat pushes with, paced at a launch-day claim rate.
PUSHES = 2000
PUSH_CONNECTIONS = 8
PUSH_RATE = 200.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class _Seeded:
    oa_appid: str
    server_token: str
    card_id: str
    #: (session token, order_no) per buyer.
    buyers: list[tuple[str, str]]


def _seed(orders: int, fake_url: str) -> _Seeded:
    """OA + MP (at the fake and here), one event, ``orders`` orders with one ready ticket each,
    and a session token per buyer."""
    from cardpipe import clock
    from cardpipe.db import session_scope
    from cardpipe.runtime import credential_store
    from cardpipe.services import accounts
    from cardpipe.services.codes import new_codes
    from cardpipe.services.miniprogram_sessions import MpSession, issue_token
    from cardpipe.services.ticket_signing import sign_card_ext
    from models import Event, Order, Ticket, TicketState
    from models.event import UNAMBIGUOUS_ALPHABET
    from wechat.fake import FakeWeChatControl

    tag = uuid.uuid4().hex[:10]
    oa_appid, mp_appid = f"wxoa{tag}", f"wxmp{tag}"
    fake = FakeWeChatControl(fake_url)
    fake.register_oa(oa_appid, f"oa-secret-{tag}", f"token{tag}")
    fake.register_mp(mp_appid, f"mp-secret-{tag}", oa_appid)
    fake.close()
    card_id = f"pBENCH{tag}"
    with session_scope() as session:
        oa = accounts.upsert_official_account(
            session,
            accounts.OfficialAccountInput(
                appid=oa_appid, app_secret=f"oa-secret-{tag}", server_token=f"token{tag}", use_stable_token=False
            ),
        )
        mp = accounts.upsert_mini_program(session, mp_appid, f"mp-secret-{tag}", oa_appid)
        event = Event(name="bench", official_account_id=oa.id, mini_program_id=mp.id, card_id=card_id, state="issued")
        session.add(event)
        session.flush()
        event_id = event.id
    current = credential_store().card_ticket(oa_appid)
    codes = new_codes(orders, 12, UNAMBIGUOUS_ALPHABET)
    expires_at = int(time.time()) + 3600
    pairs = []
    with session_scope() as session:
        order_rows = [
            Order(event_id=event_id, order_no=f"B{i:07d}", mp_openid=f"o-bench-{tag}-{i}", ticket_count=1)
            for i in range(orders)
        ]
        session.add_all(order_rows)
        session.flush()
        tickets = [
            Ticket(event_id=event_id, order_id=o.id, seq=1, card_id=card_id, code=code, state=TicketState.READY)
            for o, code in zip(order_rows, codes, strict=True)
        ]
        session.add_all(tickets)
        session.flush()
        now = clock.now()
        for ticket in tickets:
            signed = sign_card_ext(
                api_ticket=current.value, card_id=card_id, code=ticket.code, outer_str=str(ticket.id)
            )
            ticket.card_ext, ticket.nonce, ticket.timestamp = signed.card_ext, signed.nonce, signed.timestamp
            ticket.ticket_version, ticket.signed_at = current.version, now
        for order in order_rows:
            token = issue_token(MpSession(mp_appid, oa_appid, order.mp_openid, None, expires_at))
            pairs.append((token, order.order_no))
    return _Seeded(oa_appid, f"token{tag}", card_id, pairs)


def _tickets_written_since(since: datetime) -> int:
    """Ticket rows updated since ``since`` (every ticket write sets ``updated_at``)."""
    from sqlalchemy import func, select

    from cardpipe.db import session_scope
    from models import Ticket

    with session_scope() as session:
        return int(session.scalar(select(func.count()).where(Ticket.updated_at >= since)) or 0)


def _push_requests(seeded: _Seeded, count: int) -> list[str]:
    """``count`` distinct user_get_card pushes, signed as WeChat signs them (plain mode)."""
    from urllib.parse import urlencode

    from wechat.fake.pusher import PushTarget, signed_request
    from wechat.pushes import UserGetCard

    target = PushTarget(seeded.oa_appid, None, seeded.server_token, None, False)
    now = int(time.time())
    lines = []
    for index in range(count):
        event = UserGetCard(
            to_user="gh_bench",
            from_user=f"o-bench-holder-{index}",
            create_time=now,
            card_id=seeded.card_id,
            code=f"PUSH{index:08d}",
            outer_str="0",
        )
        params, body = signed_request(target, event, str(now), str(1_000_000 + index))
        head = f"POST /wechat/{seeded.oa_appid}/events?{urlencode(params)} HTTP/1.1\\r\\nHost: bench\\r\\n"
        head += f"Content-Type: text/xml\\r\\nContent-Length: {len(body.encode())}\\r\\n\\r\\n"
        lines.append(head + body)
    return lines


def _drop_queued_pushes(redis_url: str) -> None:
    """The push phase queued one processing message per push; no worker of this run takes them."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.delete("dramatiq:events", "dramatiq:events.msgs")
    client.close()


def _healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _start_servers(ports: list[int], env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    """One single-process uvicorn server per port; the load generator spreads its connections
    over them round-robin, as a load balancer in front of the api replicas would. (With
    ``uvicorn --workers`` the processes share one socket, and whichever accepts first takes the
    whole burst of waiting connections: 32 connections opened at once were split as unevenly as
    26/6, leaving a core idle; ``SO_REUSEPORT`` hashing still gave 22/10.)"""
    servers = []
    for port in ports:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "api:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-server-header",
        ]
        command += ["--log-level", "warning", "--no-access-log", "--loop", "uvloop", "--http", "httptools"]
        servers.append(subprocess.Popen(command, cwd=ROOT, env=env))
    deadline = time.monotonic() + 30
    while not all(_healthy(port) for port in ports):
        if time.monotonic() > deadline or any(server.poll() is not None for server in servers):
            for server in servers:
                server.kill()
            raise RuntimeError("the api servers did not start")
        time.sleep(0.2)
    return servers


def main(args: argparse.Namespace) -> None:
    from cryptography.fernet import Fernet

    admin_url = os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL)
    database_url = scratch_database(admin_url, "cardpipe_bench_poll")
    data_dir = tempfile.mkdtemp(prefix="cardpipe-bench-")
    env_values = {
        "DATABASE_URL": database_url,
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        "CARDPIPE_SECRET_KEYS": Fernet.generate_key().decode(),
        "CARDPIPE_DATA_DIR": data_dir,
    }
    os.environ.update(env_values)
    sys.path.insert(0, str(ROOT))
    from cardpipe import clock
    from cardpipe.migrate import upgrade
    from wechat.fake import FakeWeChatServer

    upgrade(database_url)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        with FakeWeChatServer() as fake:
            os.environ["CARDPIPE_WECHAT_API_BASE"] = env_values["CARDPIPE_WECHAT_API_BASE"] = fake.url
            started = time.perf_counter()
            seeded = _seed(args.orders, fake.url)
            print(f"seeded {args.orders} orders with a ready ticket each in {time.perf_counter() - started:.1f}s")
            ports = [_free_port() for _ in range(args.workers)]
            servers = _start_servers(ports, {**os.environ, **env_values})
            polls = [request_line(f"/v1/orders/{order_no}/claim", token) for token, order_no in seeded.buyers]

            fill = run_load(ports, polls, 600.0, args.connections, 0.0, once=True)
            print(f"cache fill (first polls, ready → served): {fill['requests']} requests, {fill['statuses']}")
            baseline = run_load(ports, [request_line("/healthz")], args.seconds, args.connections, WARMUP_S)
            print(
                f"baseline GET /healthz: {baseline['rps']:.0f} req/s, p50 {baseline['p50_ms']:.2f} ms, "
                f"p99 {baseline['p99_ms']:.2f} ms, {baseline['statuses']}"
            )
            poll_started = clock.now()
            poll = run_load(ports, polls, args.seconds, args.connections, WARMUP_S)
            written = _tickets_written_since(poll_started)
            print(
                f"poll GET /v1/orders/{{order_no}}/claim over {args.orders} orders: {poll['rps']:.0f} req/s, "
                f"p50 {poll['p50_ms']:.2f} ms, p99 {poll['p99_ms']:.2f} ms, {poll['statuses']}"
            )
            print(f"poll / baseline throughput: {poll['rps'] / baseline['rps']:.2f}")
            print(f"ticket rows written during the poll run: {written}")
            pushes = _push_requests(seeded, 2 * PUSHES)
            paced = run_load(ports, pushes[:PUSHES], 600.0, PUSH_CONNECTIONS, WARMUP_S, once=True, rate=PUSH_RATE)
            flat_out = run_load(ports, pushes[PUSHES:], 600.0, PUSH_CONNECTIONS, 0.0, once=True)
            print(
                f"push POST /wechat/{{oa_appid}}/events, {PUSHES} distinct signed pushes over {PUSH_CONNECTIONS} "
                f"connections at {PUSH_RATE:.0f}/s ({paced['requests']} timed after the warm-up): "
                f"p50 {paced['p50_ms']:.2f} ms, p99 {paced['p99_ms']:.2f} ms, {paced['statuses']}"
            )
            print(
                f"push back to back over {PUSH_CONNECTIONS} connections: {PUSHES / flat_out['elapsed_s']:.0f}/s, "
                f"p50 {flat_out['p50_ms']:.2f} ms, p99 {flat_out['p99_ms']:.2f} ms, {flat_out['statuses']}"
            )
            print(
                f"setup: {args.workers} uvicorn processes (connections spread round-robin), "
                f"{args.connections} keep-alive connections, "
                f"{args.seconds:.0f}s measured after {WARMUP_S:.0f}s warm-up, {os.cpu_count()} CPUs shared "
                "by server, load generator and Redis/PostgreSQL"
            )
            figures = {
                "rps": round(poll["rps"], 1),
                "p50_ms": round(poll["p50_ms"], 3),
                "p99_ms": round(poll["p99_ms"], 3),
                "baseline_rps": round(baseline["rps"], 1),
            }
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=15)
        _drop_queued_pushes(env_values["REDIS_URL"])
        from cardpipe.db import reset

        reset()
        drop_database(admin_url, database_url)
    print(json.dumps(figures))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    return parser.parse_args()


if __name__ == "__main__":
    main(parse_args())
