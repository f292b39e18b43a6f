"""``cardpipe venue …``: an event's check-in lists and gates, and who is inside (on the database
directly, like the other admin commands)."""

from __future__ import annotations

from datetime import datetime

import typer
from rich.console import Console
from rich.table import Table

from cardpipe.db import session_scope
from cardpipe.services.checkin import gates, lists, occupancy
from models import ListPolicy

venue_app = typer.Typer(no_args_is_help=True, help="Check-in lists, gates and who is inside.")
console = Console(highlight=False)


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold]error:[/bold] {message}", style="red")
    return typer.Exit(2)


@venue_app.command("add-list")
def add_list(
    event_id: int = typer.Argument(..., min=1),
    name: str = typer.Argument(...),
    policy: ListPolicy = typer.Option(ListPolicy.SINGLE, help="single: first entry consumes; multi: re-entry."),
    max_entries: int | None = typer.Option(None, min=1),
    max_per_day: int | None = typer.Option(None, min=1),
    anti_passback: bool = typer.Option(False, "--anti-passback", help="A ticket inside must exit first."),
    window_start: datetime | None = typer.Option(None, formats=["%Y-%m-%dT%H:%M:%S%z"]),
    window_end: datetime | None = typer.Option(None, formats=["%Y-%m-%dT%H:%M:%S%z"]),
    capacity: int | None = typer.Option(None, min=1),
    ticket_classes: list[str] | None = typer.Option(
        None, "--class", help="Admit only tickets of this class (repeat for several); default: every ticket."
    ),
) -> None:
    """Add a check-in list to an event."""
    settings = lists.ListSettings(
        name=name,
        policy=policy,
        max_entries=max_entries,
        max_per_day=max_per_day,
        entry_after_exit_only=anti_passback,
        window_start=window_start,
        window_end=window_end,
        capacity=capacity,
        ticket_classes=ticket_classes or None,
    )
    try:
        with session_scope() as session:
            made = lists.create_list(session, event_id, settings)
            admits = ", ".join(made.ticket_classes) if made.ticket_classes else "every ticket"
            console.print(f"list {made.id} {made.name!r} ({made.policy}, admits {admits}) added to event {event_id}")
    except (lists.ListError, lists.UnknownList) as exc:
        raise _fail(str(exc)) from None


@venue_app.command("add-gate")
def add_gate(
    event_id: int = typer.Argument(..., min=1),
    list_id: int = typer.Argument(..., min=1),
    name: str = typer.Argument(...),
) -> None:
    """Add a gate to a list; prints its token (shown this once)."""
    try:
        with session_scope() as session:
            made = gates.add_gate(session, event_id, list_id, name)
    except (lists.ListError, lists.UnknownList) as exc:
        raise _fail(str(exc)) from None
    console.print(f"gate {made.identity.gate_id} {name!r} of list {list_id}; its token (keep it, shown once):")
    typer.echo(made.token)


@venue_app.command("lists")
def show_lists(event_id: int = typer.Argument(..., min=1)) -> None:
    """An event's lists and who is inside through each."""
    try:
        with session_scope() as session:
            counts = occupancy.event_occupancy(session, event_id)
    except lists.UnknownList as exc:
        raise _fail(str(exc)) from None
    table = Table("list", "name", "policy", "capacity", "inside", "entries", "re-entries", "exits", "refusals")
    for item in counts.lists:
        refusals = ", ".join(f"{k} {v}" for k, v in sorted(item.refusals.items())) or "-"
        table.add_row(
            str(item.list_id),
            item.name,
            item.policy,
            str(item.capacity or "-"),
            str(item.inside_now),
            str(item.entries),
            str(item.reentries),
            str(item.exits),
            refusals,
        )
    console.print(table)
    console.print(f"inside now (each ticket once): {counts.inside_now}")


def register(app: typer.Typer) -> None:
    app.add_typer(venue_app, name="venue")
