"""``cardpipe event create``, ``cardpipe import --event E FILE`` and ``cardpipe preissue E [--watch]``.

They work on the database directly (like the other admin commands); ``preissue`` queues the
planner for the workers, and ``--watch`` follows the event's progress counters until it is done.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from cardpipe.db import session_scope
from cardpipe.runtime import credential_store
from cardpipe.services import events, order_file, order_import
from cardpipe.services.preissue import PreissueError, tracking
from models import CodeMode
from models.event import UNAMBIGUOUS_ALPHABET
from wechat.errors import WeChatError

event_app = typer.Typer(no_args_is_help=True, help="Create events.")
console = Console(highlight=False)
#: The import's progress bar is advanced every this many bytes, not on every line.
PROGRESS_STEP_BYTES = 256 * 1024
WATCH_INTERVAL_S = 0.5


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[bold]error:[/bold] {message}", style="red")
    return typer.Exit(code)


def _launch_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(f"--launch-at {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise _fail("--launch-at needs a UTC offset, e.g. 2026-12-31T20:00:00+08:00")
    return parsed


def _card_spec(path: Path | None) -> events.CardSpec | None:
    if path is None:
        return None
    try:
        return events.CardSpec.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError) as exc:
        raise _fail(f"{path} is not a card spec: {exc}") from None


@event_app.command("create")
def create_event(
    name: str = typer.Option(..., help="Event name."),
    official_account: str = typer.Option(..., "--oa", help="Appid of the official account that owns the card."),
    mini_program: str = typer.Option(..., "--mp", help="Appid of the mini program that hands tickets out."),
    card_id: str | None = typer.Option(None, help="Bind an existing MEETING_TICKET/SCENIC_TICKET card."),
    card_spec: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="JSON card spec: create the card with card/create."
    ),
    deposit: bool = typer.Option(False, help="New card in deposit mode (codes deposited, not in cardExt)."),
    code_length: int = typer.Option(12, min=6, max=20, help="Custom code length."),
    alphabet: str = typer.Option(UNAMBIGUOUS_ALPHABET, help="Custom code characters."),
    allow_ambiguous: bool = typer.Option(False, help="Allow 0/O/o/1/I/l/L in the alphabet."),
    launch_at: str | None = typer.Option(None, help="Launch time, ISO 8601 with offset."),
    notes: str | None = typer.Option(None, help="Free text."),
) -> None:
    """Create an event; prints its id."""
    data = events.EventInput(
        name=name,
        oa_appid=official_account,
        mp_appid=mini_program,
        card_id=card_id,
        card_spec=_card_spec(card_spec),
        code_mode=CodeMode.DEPOSIT if deposit else CodeMode.CUSTOM,
        code_policy=events.CodePolicy(code_length, alphabet, allow_ambiguous),
        launch_at=_launch_time(launch_at),
        notes=notes,
    )
    try:
        with session_scope() as session:
            event = events.create_event(session, data, card_api=credential_store().card_api(official_account))
            event_id, event_card = event.id, event.card_id
    except events.EventError as exc:
        raise _fail(str(exc)) from None
    except WeChatError as exc:
        raise _fail(str(exc), 1) from None
    console.print(f"event {event_id} created with card {event_card}")


def _format_of(path: Path, given: order_file.ImportFormat | None) -> order_file.ImportFormat:
    if given is not None:
        return given
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return order_file.ImportFormat.CSV
    if suffix in (".jsonl", ".ndjson"):
        return order_file.ImportFormat.JSONL
    raise _fail(f"cannot tell the format of {path.name}: use --format csv|jsonl")


def import_orders(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV (with header) or JSON lines."),
    event: int = typer.Option(..., "--event", "-e", help="Event id."),
    fmt: order_file.ImportFormat | None = typer.Option(None, "--format", help="csv or jsonl (default: by suffix)."),
    reject_conflicts: bool = typer.Option(False, help="Reject the whole import if any order conflicts."),
) -> None:
    """Import orders into an event: all or nothing; bad rows are reported by line."""
    chosen = _format_of(file, fmt)
    columns = (TextColumn("importing"), BarColumn(), DownloadColumn(), TaskProgressColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, transient=True) as bar, file.open("rb") as stream:
            task = bar.add_task("import", total=os.path.getsize(file))
            unreported = 0

            def advance(size: int) -> None:
                nonlocal unreported
                unreported += size
                if unreported >= PROGRESS_STEP_BYTES:
                    bar.advance(task, unreported)
                    unreported = 0

            with session_scope() as session:
                report = order_import.import_orders(
                    session, event, stream, chosen, reject_conflicts=reject_conflicts, progress=advance
                )
    except events.UnknownEvent as exc:
        raise _fail(str(exc)) from None
    except order_file.ImportRejected as exc:
        console.print(f"import rejected, nothing stored ({exc.total} problem(s)):", style="bold red")
        for error in exc.errors:
            console.print(f"  line {error.line}: {error.reason}")
        if exc.total > len(exc.errors):
            console.print(f"  … and {exc.total - len(exc.errors)} more")
        raise typer.Exit(1) from None
    console.print(
        f"{report.rows} rows: {report.inserted} new orders ({report.tickets_added} tickets), "
        f"{report.unchanged} unchanged, {report.conflicts_total} conflicts"
    )
    for conflict in report.conflicts:
        console.print(
            f"  conflict line {conflict.line}: order_no {conflict.order_no!r} is stored with another "
            f"{', '.join(conflict.fields)} (not overwritten)",
            style="yellow",
        )


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("… tickets/s" if speed is None else f"{speed:,.0f} tickets/s", style="cyan")


def _progress_table(progress: tracking.Progress) -> Table:
    table = Table(title=f"event {progress.event_id}: {progress.state}", show_header=False)
    table.add_row("orders complete", f"{progress.orders_complete:,} / {progress.orders_total:,}")
    table.add_row("tickets issued", f"{progress.tickets_issued:,} / {progress.tickets_total:,}")
    table.add_row("stock covers", f"{progress.stock_covered:,} / {progress.tickets_total:,}")
    for state, count in (progress.tickets_by_state or {}).items():
        table.add_row(f"  {state}", f"{count:,}")
    return table


def _read_progress(event_id: int, *, by_state: bool = False) -> tracking.Progress:
    with session_scope() as session:
        return tracking.preissue_progress(session, event_id, by_state=by_state)


def _watch(event_id: int) -> None:
    first = _read_progress(event_id)
    columns: list[Any] = [
        TextColumn("pre-issue"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("tickets", total=max(first.tickets_total, 1), completed=first.tickets_issued)
        while True:
            current = _read_progress(event_id)
            bar.update(task, total=max(current.tickets_total, 1), completed=current.tickets_issued)
            if current.state == "issued":
                break
            time.sleep(WATCH_INTERVAL_S)
    console.print(_progress_table(_read_progress(event_id, by_state=True)))


def start_preissue(
    event_id: int = typer.Argument(..., help="Event id."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Follow progress: done, rate and ETA."),
) -> None:
    """Start pre-issuing an event's tickets (the workers do it)."""
    from workers.outbox import flush
    from workers.preissue import plan_preissue

    try:
        with session_scope() as session:
            state, planner = tracking.start_and_queue_planner(session, event_id, planner_actor=plan_preissue.actor_name)
    except events.UnknownEvent as exc:
        raise _fail(str(exc)) from None
    except PreissueError as exc:
        raise _fail(str(exc)) from None
    flush([planner])
    console.print(f"event {event_id} is {state}; the planner is queued")
    if watch:
        try:
            _watch(event_id)
        except KeyboardInterrupt:
            console.print("stopped watching; pre-issue goes on in the workers")


def register(app: typer.Typer) -> None:
    app.add_typer(event_app, name="event")
    app.command("import")(import_orders)
    app.command("preissue")(start_preissue)
