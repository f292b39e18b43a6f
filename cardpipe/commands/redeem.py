"""``cardpipe redeem CODE --gate G``: a gate without a scanner, at a terminal.

The same check and record as ``POST /v1/redemptions`` (straight on the database); the WeChat
consume is queued for the workers. Exit status: 0 let in, 1 refused, 2 unusable scan.
"""

from __future__ import annotations

import uuid

import typer
from pydantic import ValidationError
from rich.console import Console

from cardpipe.services import redemptions
from cardpipe.services.scan_answers import Scan
from cardpipe.services.scan_fields import ScanFields


def redeem(
    code: str = typer.Argument(..., help="The ticket code, as printed under the QR code."),
    gate: str = typer.Option(..., "--gate", "-g", help="Which gate is letting people in."),
    card_id: str | None = typer.Option(None, help="The event's card_id (needed only if the code is ambiguous)."),
    event_id: int | None = typer.Option(None, help="The event's id, instead of --card-id."),
    nonce: str | None = typer.Option(
        None, help="Repeat a scan safely: the same nonce gets the same answer. A fresh one by default."
    ),
) -> None:
    """Redeem one ticket code at a gate."""
    from workers.outbox import flush

    console = Console(highlight=False)
    fields = {"code": code, "gate": gate, "nonce": nonce or uuid.uuid4().hex, "card_id": card_id, "event_id": event_id}
    try:
        checked = ScanFields.model_validate(fields)
    except ValidationError as exc:
        for error in exc.errors():
            console.print(f"[bold]error:[/bold] {error['loc'][-1]}: {error['msg']}", style="yellow")
        raise typer.Exit(2) from None
    scan = Scan(checked.code, checked.gate or gate, checked.nonce, checked.card_id, checked.event_id)
    try:
        answer, intents = redemptions.redeem_and_queue(scan)
    except redemptions.RedemptionRefused as exc:
        console.print(f"[bold]error:[/bold] {exc}", style="yellow")
        raise typer.Exit(2) from exc
    flush(intents)
    replayed = " (repeated scan)" if answer.replayed else ""
    if answer.ok:
        console.print(f"OK {answer.code}: {answer.message()}{replayed}", style="bold green")
        return
    console.print(f"REFUSED {answer.code}: {answer.result} — {answer.message()}{replayed}", style="bold red")
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("redeem")(redeem)
