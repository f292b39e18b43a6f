"""``cardpipe demo``: run a whole event on the embedded stack and print the report."""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cardpipe.commands.doctor import readiness_table
from cardpipe.demo.scenario import Demo, DemoReport
from cardpipe.demo.stack import running_stack


def _print(report: DemoReport, console: Console, total_s: float) -> None:
    stages = Table("stage", "items", "seconds", "items/s", title="Throughput")
    for stage in report.stages:
        stages.add_row(stage.name, str(stage.count), f"{stage.seconds:.2f}", f"{stage.rate:,.0f}")
    console.print(stages)
    funnel = Table("state", "tickets", title="Funnel (from /v1/events/{id}/stats)")
    for state, count in report.funnel.get("tickets_by_state", {}).items():
        funnel.add_row(state, str(count))
    console.print(funnel)
    counters = report.funnel.get("wechat_counters", {})
    if counters:
        console.print("WeChat counters: " + ", ".join(f"{k}={v}" for k, v in sorted(counters.items())))
    if report.errors:
        errors = Table("error", "count", title="Errors seen (expected ones included: cancels are not errors)")
        for error, count in report.errors.most_common():
            errors.add_row(error, str(count))
        console.print(errors)
    if report.venue is not None:
        venue, counts = report.venue, report.venue.counts
        console.print(
            f"venue: entries {counts.get('entries')}, re-entries {counts.get('reentries')}, "
            f"exits {counts.get('exits')}, inside now {counts.get('inside_now')}, "
            f"refused for capacity {venue.capacity_refusals}, offline scans synced {venue.offline_synced}, "
            f"conflicts {venue.conflicts}"
        )
    console.print(f"total {total_s:.1f}s; final ticket states: {report.final_states}")


def demo(
    orders: int = typer.Option(10_000, min=10, help="Orders to import (one ticket each)."),
    data_dir: Path | None = typer.Option(None, help="Where the stack keeps its files (default: a fresh temp dir)."),
    workers: int = typer.Option(2, help="Worker processes."),
    misconfigured_card: bool = typer.Option(
        False,
        help="Start with a misconfigured card: the doctor shows the failing items and remedies, then they are applied.",
    ),
) -> None:
    """Run a whole event: card, import, pre-issue, claims with a ticket rotation, gate redemptions."""
    console = Console()
    directory = data_dir or Path(tempfile.mkdtemp(prefix="cardpipe-demo-"))
    admin_token = secrets.token_urlsafe(24)
    started = time.perf_counter()
    console.print(f"cardpipe demo: {orders} orders; logs and data in {directory}")
    with running_stack(directory, admin_token=admin_token, workers=workers) as stack:
        report = Demo(
            stack,
            admin_token,
            orders,
            misconfigured_card=misconfigured_card,
            show_readiness=lambda r: console.print(readiness_table(r)),
        ).run()
    _print(report, console, time.perf_counter() - started)
    if report.problems:
        for problem in report.problems:
            console.print(f"[red]PROBLEM[/red] {problem}")
        raise typer.Exit(1)
    console.print("[green]every ticket ended in its expected state[/green]")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
