"""``cardpipe doctor [--event E] [--oa APPID]``: the go-live readiness check as a table.

Exit status 0 when nothing is failing (warnings allowed), 1 when something is, 2 for an unknown
event or account. ``--json`` prints the same report the admin endpoint answers.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cardpipe.db import session_scope
from cardpipe.routes.readiness import ports
from cardpipe.services.events import UnknownEvent
from cardpipe.services.readiness import checks
from cardpipe.services.readiness.report import Report

console = Console(highlight=False)
MARKS = {"ok": ("✔ ok", "green"), "warning": ("! warning", "yellow"), "failing": ("✘ failing", "bold red")}


def readiness_table(report: dict[str, Any]) -> Table:
    """One report (``Report.as_dict`` / the endpoint's JSON) as a rich table."""
    verdict = "[green]ready[/green]" if report["ready"] else "[red]NOT READY[/red]"
    counts = ", ".join(f"{n} {status}" for status, n in report["counts"].items() if n)
    table = Table(
        "", "status", "check", "found", "remedy", title=f"Readiness of {report['scope']}: {verdict} ({counts})"
    )
    section = None
    for item in report["items"]:
        label, style = MARKS[item["status"]]
        heading = item["section"] if item["section"] != section else ""
        section = item["section"]
        table.add_row(
            Text(heading, style="bold"),
            Text(label, style=style),
            Text.assemble(item["title"], "\n", (item["checked"], "dim")),
            Text(item["detail"]),
            Text(item["remedy"] or "", style="yellow" if item["remedy"] else ""),
        )
    return table


def doctor(
    event: int | None = typer.Option(None, "--event", help="Check this event (its account, card and pre-issue)."),
    official_account: str | None = typer.Option(None, "--oa", help="Check this official account only."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check an account or an event will work before launch; exit 1 if anything is failing."""
    try:
        with session_scope() as session:
            if event is not None:
                reports: list[Report] = [checks.check_event(session, ports(), event)]
            elif official_account is not None:
                reports = [checks.check_account(session, ports(), official_account)]
            else:
                reports = checks.check_all(session, ports())
    except (UnknownEvent, checks.UnknownAccount) as exc:
        console.print(f"[bold]error:[/bold] {exc}", style="red")
        raise typer.Exit(2) from None
    if not reports:
        console.print("nothing to check: register an official account first (cardpipe account add-oa)")
        raise typer.Exit(1)
    for report in reports:
        if as_json:
            typer.echo(json.dumps(report.as_dict(), ensure_ascii=False))
        else:
            console.print(readiness_table(report.as_dict()))
    if not all(report.ready for report in reports):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
