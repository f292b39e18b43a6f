"""Benchmark: re-signing every outstanding ticket after an api_ticket rotation, end to end.

In a scratch PostgreSQL database, with real Redis and the fake WeChat (in this process), it
writes N outstanding tickets (80 % ``ready``, 20 % ``served``) signed with the current card ticket
(version 1), starts dramatiq worker *processes* on the ``maintenance`` queue, rotates the ticket
in the fake and forces a refresh — the path a real rotation takes: the store sees a new value,
bumps the version, the rotation hook sends the fan-out, which sends one message per chunk of
stale tickets; chunk workers sign and write set-based. It times from the refresh to the last
chunk acknowledged, checks that nothing stale is left, and has a sample of the re-signed
payloads accepted by the fake's addCard. For scale, it also times the scheduler's periodic
check when nothing is stale, and signing alone in a tight loop.

Usage::

    .venv/bin/python bench/resign.py [--tickets 200000] [--processes 2] [--threads 2] [--chunk 5000]

``BENCH_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``) is the server
the scratch database is created on (and dropped after); ``BENCH_REDIS_URL`` (default
``redis://127.0.0.1:6379/13``) a Redis database the run may flush. The last line printed is
``{"tickets": N, "resign_per_s": …, "seconds": …}``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from scratch_db import drop_database, scratch_database

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
WORKER_START_TIMEOUT_S = 60
POLL_S = 0.05
ADDCARD_SAMPLE = 50
SIGN_FLOOR_SAMPLE = 100_000


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=200_000)
    parser.add_argument("--processes", type=int, default=2, help="dramatiq worker processes")
    parser.add_argument("--threads", type=int, default=2, help="threads per worker process")
    parser.add_argument("--chunk", type=int, default=5_000, help="tickets per re-sign chunk message")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up on the re-sign after this")
    return parser.parse_args()


def _configure(database_url: str, redis_url: str, data_dir: str, chunk: int) -> None:
    """Settings for this process and the workers it starts (they inherit the environment)."""
    from cryptography.fernet import Fernet

    os.environ.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CARDPIPE_DATA_DIR": data_dir,
            "CARDPIPE_SECRET_KEYS": Fernet.generate_key().decode(),
            "CARDPIPE_RESIGN_CHUNK_TICKETS": str(chunk),
        }
    )


def _write_tickets(event_id: int, card_id: str, count: int, api_ticket: str, version: int) -> float:
    """N one-ticket orders and their tickets, signed as pre-issue signs them, in one COPY each."""
    import psycopg

    from cardpipe.services.ticket_signing import sign_card_ext
    from cardpipe.settings import get_settings

    started = time.perf_counter()
    url = get_settings().effective_database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url) as conn:
        first_order = conn.execute(
            "INSERT INTO orders (event_id, order_no, mp_openid, ticket_count, created_at) "
            "SELECT %s, 'B' || g, 'oMP' || g, 1, now() FROM generate_series(1, %s) AS g RETURNING id",
            (event_id, count),
        ).fetchone()
        assert first_order is not None
        first_ticket = conn.execute("SELECT nextval('tickets_id_seq')").fetchone()
        assert first_ticket is not None
        conn.execute("SELECT setval('tickets_id_seq', %s)", (first_ticket[0] + count,))
        columns = (
            "id, event_id, order_id, seq, card_id, code, state, card_ext, ticket_version, nonce, timestamp, "
            "signed_at, confirmed_by_client, confirmed_by_wechat, updated_at"
        )
        with conn.cursor().copy(f"COPY tickets ({columns}) FROM STDIN") as copy:
            for i in range(count):
                ticket_id = first_ticket[0] + i
                code = f"R{ticket_id:012d}"
                ext = sign_card_ext(api_ticket=api_ticket, card_id=card_id, code=code, outer_str=str(ticket_id))
                state = "served" if i % 5 == 0 else "ready"
                copy.write_row(
                    (ticket_id, event_id, first_order[0] + i, 1, card_id, code, state, ext.card_ext, version,
                     ext.nonce, ext.timestamp, "now", False, False, "now")
                )  # fmt: skip
        conn.execute("ANALYZE tickets")
    return time.perf_counter() - started


def _start_workers(processes: int, threads: int, log_path: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "dramatiq", "workers",
        "--processes", str(processes), "--threads", str(threads), "--queues", "maintenance",
    ]  # fmt: skip
    log = log_path.open("wb")
    workers = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while log_path.read_text(errors="replace").count("ready for action") < processes:
        if workers.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"dramatiq workers did not start; see {log_path}")
        time.sleep(0.1)
    return workers


def _stop(workers: subprocess.Popen[bytes]) -> None:
    if workers.poll() is None:
        os.killpg(workers.pid, signal.SIGTERM)
        workers.wait(timeout=60)


def _wait_for_resign(redis_url: str, appid: str, version: int, timeout_s: float) -> None:
    """Until the fan-out for ``version`` has run and every chunk message is acknowledged."""
    import redis as redis_lib

    client = redis_lib.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout_s
    while True:
        # A message stays in <queue>.msgs until it is acked; a retry would wait in the delay queue.
        pending = client.hlen("dramatiq:maintenance.msgs") + client.hlen("dramatiq:maintenance.DQ.msgs")
        if client.exists(f"cardpipe:resign-fanout:{appid}:{version}") and pending == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"re-sign not finished in {timeout_s}s")
        time.sleep(POLL_S)


def _sign_floor(card_id: str, api_ticket: str) -> float:
    from cardpipe.services.ticket_signing import sign_card_ext

    started = time.perf_counter()
    for i in range(SIGN_FLOOR_SAMPLE):
        sign_card_ext(api_ticket=api_ticket, card_id=card_id, code=f"F{i:012d}", outer_str=str(i))
    return SIGN_FLOOR_SAMPLE / (time.perf_counter() - started)


def main() -> None:
    args = _arguments()
    admin_url = os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL)
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
    database_url = scratch_database(admin_url, "cardpipe_bench_resign")
    scratch = Path(tempfile.mkdtemp(prefix="cardpipe-bench-"))
    _configure(database_url, redis_url, str(scratch), args.chunk)

    import redis as redis_lib

    from cardpipe.migrate import upgrade

    upgrade(database_url)
    redis_lib.Redis.from_url(redis_url).flushdb()
    from wechat.fake import FakeWeChatControl, FakeWeChatServer

    worker_pool: subprocess.Popen[bytes] | None = None
    try:
        with FakeWeChatServer(push_timeout_s=1.0) as fake_server:
            os.environ["CARDPIPE_WECHAT_API_BASE"] = fake_server.url
            from sqlalchemy import func, select

            import workers.resign  # noqa: F401  (registers the re-sign listener, as every entry point does)
            from cardpipe.db import session_scope
            from cardpipe.runtime import credential_store
            from cardpipe.services import accounts, resign
            from models import Event, Ticket

            fake = FakeWeChatControl(fake_server.url)
            tag = uuid.uuid4().hex[:8]
            oa_appid, mp_appid, person = f"wxbenchoa{tag}", f"wxbenchmp{tag}", f"bench-{tag}"
            fake.register_oa(oa_appid, "bench-oa-secret", "benchtoken")
            fake.register_mp(mp_appid, "bench-mp-secret", oa_appid)
            fake.add_person(person)
            with session_scope() as session:
                oa = accounts.upsert_official_account(
                    session, accounts.OfficialAccountInput(oa_appid, "bench-oa-secret", "benchtoken")
                )
                mp = accounts.upsert_mini_program(session, mp_appid, "bench-mp-secret", oa_appid)
                oa_id, mp_id = oa.id, mp.id
            store = credential_store()
            card_id = store.card_api(oa_appid).card_create(_card_body(fake.now()))
            fake.review_card(card_id)
            with session_scope() as session:
                event = Event(name="bench", official_account_id=oa_id, mini_program_id=mp_id, card_id=card_id)
                session.add(event)
                session.flush()
                event_id = event.id

            old = store.card_ticket(oa_appid)
            setup_s = _write_tickets(event_id, card_id, args.tickets, old.value, old.version)
            print(f"setup: {args.tickets:,} outstanding tickets signed with version {old.version} in {setup_s:.1f}s")
            worker_pool = _start_workers(args.processes, args.threads, scratch / "workers.log")
            print(f"re-sign: {args.processes} worker processes x {args.threads} threads, chunks of {args.chunk:,}")

            fake.rotate_ticket(oa_appid, grace_s=300)
            started = time.perf_counter()
            outcome = store.refresh(oa_appid, "card_ticket", min_validity_s=0, force=True)
            assert outcome.rotated, "the fake did not rotate the ticket"
            _wait_for_resign(redis_url, oa_appid, outcome.credential.version, args.timeout)
            elapsed = time.perf_counter() - started
            _stop(worker_pool)
            worker_pool = None

            new = outcome.credential
            chunks = -(-args.tickets // args.chunk)
            with session_scope() as session:
                check_started = time.perf_counter()
                assert resign.stale_ranges(session, oa_id, new.version, args.chunk) == []
                check_s = time.perf_counter() - check_started
                stale = resign.stale_count(session, oa_id, new.version)
                sample = list(
                    session.execute(
                        select(Ticket.card_ext, Ticket.ticket_version)
                        .where(Ticket.event_id == event_id)
                        .order_by(func.random())
                        .limit(ADDCARD_SAMPLE)
                    )
                )
            assert stale == 0, f"{stale} tickets still carry an old signature"
            rejected = [
                answer
                for ext, version in sample
                if (answer := fake.add_card(person, mp_appid, [{"cardId": card_id, "cardExt": ext}]))["errMsg"]
                != "addCard:ok"
                or version != new.version
            ]
            assert not rejected, rejected[:3]
            rate = args.tickets / elapsed
            print(
                f"re-sign: {args.tickets:,} tickets ({chunks} chunks) in {elapsed:.2f}s = {rate:,.0f} tickets/s; "
                f"none stale; {len(sample)} sampled payloads accepted by addCard"
            )
            print(
                f"periodic stale check over {args.tickets:,} outstanding tickets, none stale: {check_s * 1000:.0f} ms"
            )
            floor = _sign_floor(card_id, new.value)
            print(f"signing alone (one core, tight loop): {floor:,.0f}/s; re-sign / signing alone = {rate / floor:.2f}")
            fake.close()
    finally:
        if worker_pool is not None:
            _stop(worker_pool)
        from cardpipe import db

        db.reset()
        drop_database(admin_url, database_url)
        redis_lib.Redis.from_url(redis_url).flushdb()
    print(json.dumps({"tickets": args.tickets, "resign_per_s": round(rate), "seconds": round(elapsed, 2)}))


def _card_body(now: float) -> dict[str, object]:
    base_info = {
        "logo_url": "http://mmbiz.qpic.cn/mmbiz/logo/0",
        "code_type": "CODE_TYPE_QRCODE",
        "brand_name": "Cardpipe Bench",
        "title": "Ticket",
        "color": "Color010",
        "notice": "Show the QR code at the gate",
        "description": "Benchmark event.",
        "sku": {"quantity": ADDCARD_SAMPLE * 2},
        "date_info": {
            "type": "DATE_TYPE_FIX_TIME_RANGE",
            "begin_timestamp": int(now),
            "end_timestamp": int(now) + 86400,
        },
        "use_custom_code": True,
        "get_limit": ADDCARD_SAMPLE * 2,
        "can_give_friend": False,
    }
    return {
        "card": {"card_type": "MEETING_TICKET", "meeting_ticket": {"base_info": base_info, "meeting_detail": "Hall"}}
    }


if __name__ == "__main__":
    main()
