"""Benchmark: gate redemption, ``POST /v1/redemptions``, with 200 gates scanning at once.

Seeds one event with claimed tickets in a scratch PostgreSQL database, starts the real app under
uvicorn (``--workers`` processes; real Redis receives the queued WeChat consumes, which no worker
drains: the answer must not depend on them), then runs the gates from a second process — a lean
asyncio HTTP/1.1 keep-alive client on uvloop, one connection per gate, so the load generator takes
as little as possible of the cores it shares with the server and the databases:

0. **baseline**: the same gates, paced the same way, asking the trivial ``GET /healthz``: the
   floor this machine (and whatever else runs on it) puts under any answer;
1. **gates at work** (the target): each of ``--gates`` gates scans a fresh ticket, waits for the
   answer, and scans the next one ``--scan-interval-ms`` later on average (uniform ±50 %, so gates
   do not march in step); one scan in 20 is a ticket that was already let in (``already_redeemed``);
2. **saturation** (for information): the same gates scanning back to back with no pause, which
   measures the most scans per second this machine answers, and the queueing delay at that rate.

With ``--policy multi`` the gates belong to a multi-entry check-in list (registered by name) and
each ticket goes through entry, exit, entry again, exit (no re-scans): the last JSON line adds
``reentries``, the second-or-later entries admitted in run 1.

Usage::

    .venv/bin/python bench/redeem.py [--gates 200] [--seconds 20] [--scan-interval-ms 1000] [--workers 2]
                                     [--policy single|multi]

``BENCH_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``) is the server
the scratch database is created on; ``BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/14``)
the Redis database the consumes are queued to (flushed before and after). The last line printed is
``{"rps": …, "p99_ms": …, "p50_ms": …, "saturation_rps": …, "saturation_p99_ms": …,
"baseline_p99_ms": …, "policy": …}`` (rps and p50/p99 of run 1; ``reentries`` too with ``multi``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scratch_db import drop_database, scratch_database

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
GATE_TOKEN = "bench-gate-token"
#: Scans before this much of each run are not measured (connections up, pools warm).
WARMUP_S = 2.0
#: One scan in this many is of a ticket the gate already let in.
RESCAN_EVERY = 20
#: Fresh tickets seeded for each run: enough for a saturated run of ~3,000 scans/s.
TICKETS_PER_RUN = 80_000
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"


# --- the gates (second process) -----------------------------------------------------------


#: What a gate of a multi-entry list does with each ticket: in, out, in again, out.
MULTI_VISIT = ("entry", "exit", "entry", "exit")


def _scan_request(code: str, gate: str, direction: str) -> bytes:
    body = json.dumps({"code": code, "gate": gate, "nonce": uuid.uuid4().hex, "direction": direction}).encode()
    head = (
        f"POST /v1/redemptions HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {GATE_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _result_of(body: bytes) -> str:
    start = body.find(b'"result":"')
    return body[start + 10 : body.find(b'"', start + 10)].decode() if start >= 0 else "other"


class _Run:
    def __init__(self, start_at: float, stop_at: float) -> None:
        self.start_at = start_at
        self.stop_at = stop_at
        self.latencies: list[float] = []
        self.results: Counter[str] = Counter()
        self.reentries = 0
        #: Gates that used up their tickets before the end (their rate is missing from the end).
        self.ran_dry: list[str] = []

    def record(self, status: int, result: str, sent_at: float, answered_at: float, *, reentry: bool) -> None:
        if sent_at >= self.start_at:
            self.latencies.append(answered_at - sent_at)
            self.results[result if status == 200 else f"http_{status}"] += 1
            self.reentries += reentry and status == 200 and result == "ok"


def _visits(codes: list[str], multi: bool) -> Iterator[tuple[str, str]]:
    for code in codes:
        for direction in MULTI_VISIT if multi else ("entry",):
            yield code, direction


async def _gate(port: int, name: str, codes: list[str], interval_s: float, run: _Run, multi: bool) -> None:
    """One gate: scan, wait for the answer, pause, next scan; single use: now and then a re-scan
    of the last ticket; multi: each ticket in, out, in again, out. With no codes, it asks
    ``GET /healthz`` instead (the baseline)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    scans = _visits(codes, multi)
    previous: tuple[str, str] | None = None
    entered: set[str] = set()
    rng = random.Random(name)
    await asyncio.sleep(rng.uniform(0, interval_s))
    try:
        while time.perf_counter() < run.stop_at:
            rescan = not multi and previous is not None and rng.randrange(RESCAN_EVERY) == 0
            visit = previous if rescan else next(scans, None)
            if visit is None and codes:
                run.ran_dry.append(name)
                return
            sent_at = time.perf_counter()
            writer.write(_scan_request(visit[0], name, visit[1]) if visit else HEALTHZ)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line[15:]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))
            body = await reader.readexactly(length)
            answered_at = time.perf_counter()
            reentry = visit is not None and visit[1] == "entry" and visit[0] in entered
            result = _result_of(body)
            run.record(int(head[9:12]), result, sent_at, answered_at, reentry=reentry)
            if visit is not None and visit[1] == "entry" and result == "ok":
                entered.add(visit[0])
            previous = visit
            if interval_s:
                await asyncio.sleep(max(0.0, interval_s * rng.uniform(0.5, 1.5) - (answered_at - sent_at)))
    finally:
        writer.close()


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


async def _gates(
    port: int, codes: list[str], gates: int, seconds: float, interval_s: float, multi: bool
) -> dict[str, Any]:
    now = time.perf_counter()
    run = _Run(start_at=now + WARMUP_S, stop_at=now + WARMUP_S + seconds)
    share = len(codes) // gates if codes else 0
    await asyncio.gather(
        *(
            _gate(port, f"gate-{g:03d}", codes[g * share : (g + 1) * share], interval_s, run, multi)
            for g in range(gates)
        )
    )
    latencies = sorted(run.latencies)
    return {
        "scans": len(latencies),
        "rps": len(latencies) / seconds,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p90_ms": _percentile(latencies, 0.90) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "max_ms": (latencies[-1] if latencies else float("nan")) * 1000,
        "results": dict(sorted(run.results.items())),
        "reentries": run.reentries,
        "gates_ran_dry": len(run.ran_dry),
    }


def gates_main(args: argparse.Namespace) -> None:
    import uvloop

    codes = Path(args.codes).read_text().split() if args.codes else []
    interval_s = args.scan_interval_ms / 1000
    multi = args.policy == "multi"
    print(json.dumps(uvloop.run(_gates(args.port, codes, args.gates, args.seconds, interval_s, multi))))


# --- the orchestrator ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_gates(port: int, codes: list[str], args: argparse.Namespace, interval_ms: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".codes", delete=False) as handle:
        handle.write("\n".join(codes))
    try:
        command = [sys.executable, __file__, "--gates-process", "--port", str(port)]
        command += ["--codes", handle.name] if codes else []
        command += ["--gates", str(args.gates), "--seconds", str(args.seconds), "--scan-interval-ms", str(interval_ms)]
        command += ["--policy", args.policy]
        gates = subprocess.run(command, capture_output=True, text=True)
        if gates.returncode != 0:
            raise RuntimeError(f"the gates process failed:\n{gates.stderr}")
        return dict(json.loads(gates.stdout.strip().splitlines()[-1]))
    finally:
        os.unlink(handle.name)


def _seed(tickets: int, policy: str, gates: int) -> list[str]:
    """One OA, MP and event; one order with ``tickets`` claimed tickets. Returns their codes.
    With the multi policy, a multi-entry list whose gates are the benchmark's gate names."""
    from sqlalchemy import insert

    from cardpipe.db import session_scope
    from cardpipe.services import accounts
    from cardpipe.services.checkin import gates as checkin_gates
    from cardpipe.services.checkin import lists
    from cardpipe.services.codes import new_codes
    from models import Event, ListPolicy, Order, Ticket, TicketState
    from models.event import UNAMBIGUOUS_ALPHABET

    tag = uuid.uuid4().hex[:10]
    codes = new_codes(tickets, 12, UNAMBIGUOUS_ALPHABET)
    with session_scope() as session:
        oa = accounts.upsert_official_account(
            session,
            accounts.OfficialAccountInput(appid=f"wxoa{tag}", app_secret=f"oa-secret-{tag}", server_token="t0k"),
        )
        mp = accounts.upsert_mini_program(session, f"wxmp{tag}", f"mp-secret-{tag}", oa.appid)
        event = Event(name="bench", official_account_id=oa.id, mini_program_id=mp.id, card_id=f"pBENCH{tag}")
        session.add(event)
        session.flush()
        order = Order(event_id=event.id, order_no="B1", mp_openid="o-bench", ticket_count=tickets)
        session.add(order)
        session.flush()
        common = {"event_id": event.id, "order_id": order.id, "card_id": event.card_id, "state": TicketState.CLAIMED}
        rows = [{**common, "seq": seq, "code": code} for seq, code in enumerate(codes, start=1)]
        session.execute(insert(Ticket), rows)
        if policy == "multi":
            hall = lists.create_list(session, event.id, lists.ListSettings("hall", policy=ListPolicy.MULTI))
            for g in range(gates):
                checkin_gates.add_gate(session, event.id, hall.id, f"gate-{g:03d}")
    return codes


def _start_server(port: int, workers: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
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
    command += ["--workers", str(workers), "--log-level", "warning", "--no-access-log"]
    command += ["--loop", "uvloop", "--http", "httptools"]
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise RuntimeError("the api server did not start")
        time.sleep(0.2)


def _describe(name: str, figures: dict[str, Any]) -> None:
    print(
        f"{name}: {figures['scans']} scans, {figures['rps']:.0f} scans/s, p50 {figures['p50_ms']:.2f} ms, "
        f"p90 {figures['p90_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms, max {figures['max_ms']:.1f} ms, "
        f"{figures['results']}"
    )
    if figures["gates_ran_dry"]:
        print(f"  {figures['gates_ran_dry']} gates ran out of tickets before the end")


def main(args: argparse.Namespace) -> None:
    import redis
    from cryptography.fernet import Fernet

    admin_url = os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL)
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    database_url = scratch_database(admin_url, "cardpipe_bench_redeem")
    env_values = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CARDPIPE_SECRET_KEYS": Fernet.generate_key().decode(),
        "CARDPIPE_DATA_DIR": tempfile.mkdtemp(prefix="cardpipe-bench-"),
        "CARDPIPE_GATE_TOKENS": GATE_TOKEN,
    }
    os.environ.update(env_values)
    sys.path.insert(0, str(ROOT))
    from cardpipe.migrate import upgrade

    upgrade(database_url)
    queue = redis.Redis.from_url(redis_url)
    queue.flushdb()
    server = None
    try:
        started = time.perf_counter()
        codes = _seed(2 * max(TICKETS_PER_RUN, 100 * args.gates), args.policy, args.gates)
        print(f"seeded {len(codes)} claimed tickets in {time.perf_counter() - started:.1f}s")
        port = _free_port()
        server = _start_server(port, args.workers, {**os.environ, **env_values})
        half = len(codes) // 2
        baseline = _run_gates(port, [], args, args.scan_interval_ms)
        _describe(
            f"baseline: {args.gates} gates asking GET /healthz, one each per ~{args.scan_interval_ms:.0f} ms", baseline
        )
        paced = _run_gates(port, codes[:half], args, args.scan_interval_ms)
        _describe(f"{args.gates} gates, one scan each per ~{args.scan_interval_ms:.0f} ms", paced)
        saturated = _run_gates(port, codes[half:], args, 0)
        _describe(f"{args.gates} gates scanning back to back (saturation)", saturated)
        print(f"consume messages queued for WeChat meanwhile: {queue.llen('dramatiq:wechat')}")
        print(
            f"setup: {args.workers} uvicorn workers, {args.gates} keep-alive connections (one per gate), "
            f"{args.seconds:.0f}s measured after {WARMUP_S:.0f}s warm-up per run, {os.cpu_count()} CPUs shared "
            "by server, gates, PostgreSQL and Redis"
        )
        figures = {
            "rps": round(paced["rps"], 1),
            "p99_ms": round(paced["p99_ms"], 3),
            "p50_ms": round(paced["p50_ms"], 3),
            "saturation_rps": round(saturated["rps"], 1),
            "saturation_p99_ms": round(saturated["p99_ms"], 3),
            "baseline_p99_ms": round(baseline["p99_ms"], 3),
            "policy": args.policy,
        }
        if args.policy == "multi":
            figures["reentries"] = paced["reentries"]
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=15)
        from cardpipe.db import reset

        reset()
        drop_database(admin_url, database_url)
        queue.flushdb()
    print(json.dumps(figures))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gates", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--scan-interval-ms", type=float, default=1000.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--policy", choices=("single", "multi"), default="single", help="the gates' list policy")
    parser.add_argument("--gates-process", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--codes", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.gates_process:
        gates_main(arguments)
    else:
        main(arguments)
