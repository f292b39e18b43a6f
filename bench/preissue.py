"""Benchmark: bulk pre-issue, end to end, against two references.

In a scratch PostgreSQL database, with real Redis and the fake WeChat (in this process), it
creates an event (``card/create``), imports N orders from a CSV file through the import service,
starts dramatiq worker *processes* on the ``preissue`` queue, and times the pre-issue from
``start`` to the last committed chunk (planner: stock read and raise, chunk messages; chunk
workers: codes, signatures, set-based writes). Then, on samples of their own, two references
(``bench/preissue_references.py``):

* naive: one ORM insert and one commit per ticket (the straightforward way);
* floor: codes and signatures in a tight loop, then a single ``COPY`` — one process, no queue,
  no per-chunk reads or commits.

Usage::

    .venv/bin/python bench/preissue.py [--orders 200000] [--tickets-per-order 1]
        [--processes 2] [--threads 2] [--chunk-tickets 2000]

``BENCH_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``) is the server
the scratch database is created on (and dropped after); ``BENCH_REDIS_URL`` (default
``redis://127.0.0.1:6379/11``) a Redis database the run may flush. The last line printed is
``{"orders": N, "tickets_per_s": …, "naive_per_s": …, "floor_per_s": …, "peak_rss_mb": …}``,
where ``peak_rss_mb`` is the highest peak RSS (VmHWM) of any worker process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import preissue_references as references
from scratch_db import drop_database, scratch_database

if TYPE_CHECKING:
    from cardpipe.services.events import CardSpec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"
WORKER_START_TIMEOUT_S = 60
POLL_S = 0.2


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--tickets-per-order", type=int, default=1)
    parser.add_argument("--processes", type=int, default=2, help="dramatiq worker processes")
    parser.add_argument("--threads", type=int, default=2, help="threads per worker process")
    parser.add_argument("--chunk-tickets", type=int, default=2_000)
    parser.add_argument("--naive-sample", type=int, default=2_000, help="tickets issued the naive way")
    parser.add_argument("--floor-sample", type=int, default=100_000, help="tickets issued the floor way")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up on the pre-issue after this")
    return parser.parse_args()


def _configure(database_url: str, redis_url: str, data_dir: str) -> None:
    """Settings for this process and the workers it starts (they inherit the environment)."""
    from cryptography.fernet import Fernet

    os.environ.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CARDPIPE_DATA_DIR": data_dir,
            "CARDPIPE_SECRET_KEYS": Fernet.generate_key().decode(),
        }
    )


def _card_spec() -> CardSpec:
    from cardpipe.services.events import CardSpec

    base_info = {
        "logo_url": "http://mmbiz.qpic.cn/mmbiz/logo/0",
        "brand_name": "Cardpipe Bench",
        "title": "Ticket",
        "color": "Color010",
        "notice": "Show the QR code at the gate",
        "description": "Benchmark event.",
        "date_info": {"type": "DATE_TYPE_FIX_TERM", "fixed_term": 30, "fixed_begin_term": 0},
    }
    return CardSpec(card_type="MEETING_TICKET", base_info=base_info, meeting_detail="Bench hall")


def _write_orders(path: Path, count: int, tickets: int, prefix: str) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write("order_no,openid,unionid,ticket_count\n")
        for start in range(0, count, 10_000):
            out.write(
                "".join(
                    f"{prefix}{n:08d},oMP{n:016d},oUN{n:016d},{tickets}\n"
                    for n in range(start, min(count, start + 10_000))
                )
            )


def _import(event_id: int, path: Path) -> tuple[int, float]:
    from cardpipe.db import session_scope
    from cardpipe.services import order_file, order_import

    started = time.perf_counter()
    with path.open("rb") as stream, session_scope() as session:
        report = order_import.import_orders(session, event_id, stream, order_file.ImportFormat.CSV)
    return report.inserted, time.perf_counter() - started


def _start_workers(processes: int, threads: int, log_path: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "dramatiq", "workers",
        "--processes", str(processes), "--threads", str(threads), "--queues", "preissue",
    ]  # fmt: skip
    log = log_path.open("wb")
    workers = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while log_path.read_text(errors="replace").count("ready for action") < processes:
        if workers.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"dramatiq workers did not start; see {log_path}")
        time.sleep(0.1)
    return workers


def _worker_pids(workers: subprocess.Popen[bytes]) -> list[int]:
    import psutil

    return [child.pid for child in psutil.Process(workers.pid).children(recursive=True)]


def _peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set size, as the kernel kept it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _database_backends() -> list[int]:
    from sqlalchemy import text

    from cardpipe.db import session_scope

    with session_scope() as session:
        query = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        return list(session.scalars(text(query)))


def _stop(workers: subprocess.Popen[bytes]) -> None:
    """SIGTERM (dramatiq stops its processes), then whatever is left of the session is killed."""
    if workers.poll() is None:
        workers.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            workers.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(workers.pid, signal.SIGKILL)
    workers.wait()


def _preissue(event_id: int, expected: int, timeout_s: float, pids: list[int]) -> tuple[float, dict[int, float]]:
    """Seconds from start to the last ticket, and the workers' peak RSS."""
    from cardpipe.db import session_scope
    from cardpipe.services.preissue import tracking
    from workers.preissue import plan_preissue

    started = time.perf_counter()
    with session_scope() as session:
        tracking.start_preissue(session, event_id)
    plan_preissue.send(event_id)
    deadline = time.monotonic() + timeout_s
    last_report = 0.0
    while True:
        with session_scope() as session:
            progress = tracking.preissue_progress(session, event_id, by_state=False)
        elapsed = time.perf_counter() - started
        if progress.tickets_issued >= expected:
            return elapsed, {pid: _peak_rss_mb(pid) for pid in pids}
        if time.monotonic() > deadline:
            raise TimeoutError(f"pre-issue incomplete after {timeout_s}s: {progress}")
        if elapsed - last_report >= 2:
            last_report = elapsed
            print(f"  {elapsed:5.1f}s  {progress.tickets_issued:>9,} / {expected:,} tickets", flush=True)
        time.sleep(POLL_S)


def _verify(event_id: int, expected: int) -> None:
    from sqlalchemy import func, select

    from cardpipe.db import session_scope
    from models import Ticket

    with session_scope() as session:
        tickets, pairs, codes = session.execute(
            select(
                func.count(),
                func.count(func.distinct(Ticket.order_id * 1000 + Ticket.seq)),
                func.count(func.distinct(Ticket.code)),
            ).where(Ticket.event_id == event_id)
        ).one()
    if not tickets == pairs == codes == expected:
        raise AssertionError(f"expected {expected} tickets, got {tickets} ({pairs} (order, seq), {codes} codes)")


def main() -> None:
    args = _arguments()
    admin_url = os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL)
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    database_url = scratch_database(admin_url, "cardpipe_bench_preissue")
    scratch = Path(tempfile.mkdtemp(prefix="cardpipe-bench-preissue-"))
    _configure(database_url, redis_url, str(scratch))

    import redis as redis_lib

    from cardpipe.migrate import upgrade

    upgrade(database_url)
    redis_lib.Redis.from_url(redis_url).flushdb()
    from wechat.fake import FakeWeChatControl, FakeWeChatServer

    workers: subprocess.Popen[bytes] | None = None
    try:
        with FakeWeChatServer(push_timeout_s=1.0) as fake_server:
            os.environ["CARDPIPE_WECHAT_API_BASE"] = fake_server.url
            from cardpipe.db import session_scope
            from cardpipe.runtime import credential_store
            from cardpipe.services import accounts, events

            fake = FakeWeChatControl(fake_server.url)
            tag = uuid.uuid4().hex[:8]
            oa_appid, mp_appid = f"wxbenchoa{tag}", f"wxbenchmp{tag}"
            fake.register_oa(oa_appid, "bench-oa-secret", "benchtoken")
            fake.register_mp(mp_appid, "bench-mp-secret", oa_appid)
            with session_scope() as session:
                accounts.upsert_official_account(
                    session, accounts.OfficialAccountInput(oa_appid, "bench-oa-secret", "benchtoken")
                )
                accounts.upsert_mini_program(session, mp_appid, "bench-mp-secret", oa_appid)

            def new_event(name: str) -> int:
                data = events.EventInput(name, oa_appid, mp_appid, card_spec=_card_spec())
                with session_scope() as session:
                    event = events.create_event(session, data, card_api=credential_store().card_api(oa_appid))
                    assert event.card_id is not None
                    fake.review_card(event.card_id)
                    return event.id

            expected = args.orders * args.tickets_per_order
            event_id = new_event("bench")
            orders_file = scratch / "orders.csv"
            _write_orders(orders_file, args.orders, args.tickets_per_order, "B")
            size_mb = orders_file.stat().st_size / 2**20
            imported, import_s = _import(event_id, orders_file)
            import_rate = imported / import_s
            print(
                f"import: {imported:,} orders ({size_mb:.0f} MB CSV) in {import_s:.1f}s = {import_rate:,.0f} orders/s"
            )

            credential_store().card_ticket(oa_appid)
            os.environ["CARDPIPE_PREISSUE_CHUNK_TICKETS"] = str(args.chunk_tickets)
            workers = _start_workers(args.processes, args.threads, scratch / "workers.log")
            pids = _worker_pids(workers)
            print(f"pre-issue: {expected:,} tickets, {args.processes} worker processes × {args.threads} threads")
            worker_cpu = sum(_cpu_seconds(pid) for pid in pids)
            elapsed, peaks = _preissue(event_id, expected, args.timeout, pids)
            worker_cpu = sum(_cpu_seconds(pid) for pid in pids) - worker_cpu
            database_cpu = sum(_cpu_seconds(pid) for pid in _database_backends())
            _stop(workers)
            _verify(event_id, expected)
            rate = expected / elapsed
            peak = max(peaks.values(), default=0.0)
            print(f"pre-issue: {expected:,} tickets in {elapsed:.2f}s = {rate:,.0f} tickets/s")
            print(f"peak RSS per worker process (MB): {', '.join(f'{mb:.0f}' for mb in peaks.values())}")
            ceiling = (os.cpu_count() or 1) * expected / (worker_cpu + database_cpu)
            print(
                f"CPU per ticket: workers {worker_cpu / expected * 1e6:.1f} µs, PostgreSQL backends "
                f"{database_cpu / expected * 1e6:.1f} µs (all {os.cpu_count()} cores on it alone: ≈ {ceiling:,.0f}/s); "
                f"load average after the run {os.getloadavg()[0]:.1f}"
            )

            naive_event = new_event("naive")
            naive_file = scratch / "naive.csv"
            _write_orders(naive_file, args.naive_sample, 1, "N")
            _import(naive_event, naive_file)
            naive_rate = references.naive_rate(naive_event, oa_appid)
            print(f"naive (ORM insert + commit per ticket, {args.naive_sample:,} tickets): {naive_rate:,.0f} tickets/s")

            floor_event = new_event("floor")
            floor_file = scratch / "floor.csv"
            _write_orders(floor_file, args.floor_sample, 1, "F")
            _import(floor_event, floor_file)
            floor_rate = references.floor_rate(floor_event, oa_appid)
            print(f"floor (tight loop + one COPY, {args.floor_sample:,} tickets): {floor_rate:,.0f} tickets/s")
            print(f"end to end / floor = {rate / floor_rate:.2f}; end to end / naive = {rate / naive_rate:.1f}")
            fake.close()
    finally:
        if workers is not None:
            _stop(workers)
        from cardpipe import db

        db.reset()
        drop_database(admin_url, database_url)
        redis_lib.Redis.from_url(redis_url).flushdb()
        shutil.rmtree(scratch, ignore_errors=True)
    result = {
        "orders": args.orders,
        "tickets_per_s": round(rate),
        "naive_per_s": round(naive_rate),
        "floor_per_s": round(floor_rate),
        "peak_rss_mb": round(peak, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
