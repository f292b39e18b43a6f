"""``cardpipe dlq list|requeue|purge``: dead letters from the command line."""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table

from cardpipe.services.queues import QueueMonitor

dlq_app = typer.Typer(no_args_is_help=True, help="Inspect, requeue or discard dead-lettered messages.")


def _monitor() -> QueueMonitor:
    from workers.broker import broker

    return QueueMonitor(broker)


def _queue_or_exit(monitor: QueueMonitor, queue: str) -> str:
    if queue not in monitor.queue_names():
        typer.echo(f"error: no queue {queue!r} (queues: {', '.join(monitor.queue_names())})", err=True)
        raise typer.Exit(2)
    return queue


@dlq_app.command("list")
def list_letters(queue: str | None = typer.Option(None, help="Only this queue."), limit: int = 50) -> None:
    """List dead letters, newest first."""
    monitor = _monitor()
    table = Table("queue", "id", "actor", "args", "retries", "failed at", "error")
    queues = [_queue_or_exit(monitor, queue)] if queue else monitor.queue_names()
    for name in queues:
        for letter in monitor.dead_letters(name, limit):
            failed = datetime.fromtimestamp(letter.failed_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
            args = repr(letter.args)
            table.add_row(name, letter.redis_id, letter.actor, args, str(letter.retries), failed, letter.error)
    Console().print(table)


@dlq_app.command("requeue")
def requeue(queue: str, redis_id: str = typer.Argument(None, help="One letter; omit for all of the queue.")) -> None:
    """Put dead letters back on their queue."""
    monitor = _monitor()
    _queue_or_exit(monitor, queue)
    ids = [redis_id] if redis_id else [letter.redis_id for letter in monitor.dead_letters(queue, 100_000)]
    done = sum(monitor.requeue(queue, letter_id) for letter_id in ids)
    typer.echo(f"requeued {done} message(s) on {queue}")
    if redis_id and not done:
        raise typer.Exit(1)


@dlq_app.command("purge")
def purge(queue: str, redis_id: str = typer.Argument(None, help="One letter; omit for all of the queue.")) -> None:
    """Discard dead letters."""
    monitor = _monitor()
    _queue_or_exit(monitor, queue)
    typer.echo(f"discarded {monitor.purge(queue, redis_id)} message(s) from {queue}")


def register(app: typer.Typer) -> None:
    app.add_typer(dlq_app, name="dlq")
