"""Long-running processes: ``cardpipe api`` and ``cardpipe worker`` (the same commands compose runs)."""

from __future__ import annotations

import os
import sys

import typer
import uvicorn

from cardpipe.routes.scan_fast_path import SCAN_THREADS
from workers.broker import QUEUES

CONSUMER_RESTART_DELAY_MS = 500
DEFAULT_API_THREADS = 16
API_POOL_OVERFLOW = 8


def api(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8000, help="Port to bind."),
    workers: int = typer.Option(1, help="uvicorn worker processes."),
    threads: int = typer.Option(
        DEFAULT_API_THREADS, "--threads", "-t", min=1, help="Threads per process for blocking calls."
    ),
) -> None:
    """Serve the HTTP API with uvicorn."""
    # Each api process runs its blocking calls (plain routes, the fast paths' database work) on
    # ``threads`` threads, plus the gate scans' own; its connection pool keeps one per thread, so
    # a launch's peak reuses connections instead of opening and closing one per request. Few
    # calls open a second connection inside a transaction (a credential refresh): a small
    # overflow keeps the process's budget near what it was with a pool of 10 and 20 more.
    os.environ["CARDPIPE_API_THREADS"] = str(threads)
    os.environ["CARDPIPE_PROCESS_THREADS"] = str(threads + SCAN_THREADS)
    os.environ.setdefault("CARDPIPE_DB_MAX_OVERFLOW", str(API_POOL_OVERFLOW))
    uvicorn.run(
        "api:app", host=host, port=port, workers=workers, log_level="warning", access_log=False, server_header=False
    )


def worker(
    processes: int = typer.Option(2, "--processes", "-p", help="Worker processes (dramatiq defaults to one per CPU)."),
    threads: int = typer.Option(4, "--threads", "-t", help="Threads per process."),
    queues: list[str] = typer.Option(list(QUEUES), "--queue", "-Q", help="Queues to consume."),
    shutdown_timeout_s: int = typer.Option(120, help="Grace for in-flight messages on SIGTERM."),
) -> None:
    """Run dramatiq worker processes for the given queues."""
    # Each worker process's connection pool follows its thread count (see cardpipe.db).
    os.environ["CARDPIPE_PROCESS_THREADS"] = str(threads)
    args = [
        sys.executable, "-m", "dramatiq", "workers",
        "--processes", str(processes),
        "--threads", str(threads),
        "--worker-shutdown-timeout", str(shutdown_timeout_s * 1000),
        "--queues", *queues,
    ]  # fmt: skip
    # A consumer that lost Redis reconnects after this long (dramatiq's default: 3 s).
    os.environ.setdefault("dramatiq_restart_delay", str(CONSUMER_RESTART_DELAY_MS))
    os.execv(sys.executable, args)


def register(app: typer.Typer) -> None:
    app.command("api")(api)
    app.command("worker")(worker)
