"""``cardpipe gate online|offline|sync``: a gate client at a terminal (or fed by a USB scanner,
which types a code and Enter), talking to the api under the gate's own token.

- ``online``: each code read from stdin is sent to ``POST /v1/redemptions``; the answer printed.
- ``offline``: downloads the gate's snapshot once (into ``--state``), then decides each code
  locally with the same rules as the server, keeping the scans for upload. Works with no network.
- ``sync``: uploads the kept scans in batches (idempotent per nonce: a retry after a lost answer
  is harmless), prints conflicts the server flagged, and fetches the deltas since the last cursor.

The token comes from ``CARDPIPE_GATE_TOKEN`` or a hidden prompt. Exit status of ``online`` and
``offline``: 0 when every scan was let through, 1 when any was refused, 2 on unusable input.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import requests
import typer
from rich.console import Console

from cardpipe import clock
from cardpipe.services.checkin import offline_gate
from models import Direction

gate_app = typer.Typer(no_args_is_help=True, help="A gate client: scan online, offline, and sync.")
console = Console(highlight=False)
UPLOAD_BATCH = 500
TIMEOUT_S = 10.0

ApiOption = typer.Option("http://127.0.0.1:8000", "--api", help="The cardpipe api's base URL.")
StateOption = typer.Option(Path("gate-state.json"), "--state", help="Where the offline snapshot and scans live.")
DirectionOption = typer.Option(Direction.ENTRY, "--direction", "-d", help="entry or exit.")


def _token() -> str:
    token = os.environ.get("CARDPIPE_GATE_TOKEN") or typer.prompt("gate token", hide_input=True)
    return token.strip()


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _codes() -> list[str]:
    return [line.strip() for line in sys.stdin if line.strip()]


def _show(code: str, ok: bool, result: str, message: str = "") -> None:
    if ok:
        console.print(f"OK {code}: {message or result}", style="bold green")
    else:
        console.print(f"REFUSED {code}: {result}{' — ' + message if message else ''}", style="bold red")


@gate_app.command("online")
def online(api: str = ApiOption, direction: Direction = DirectionOption) -> None:
    """Scan codes from stdin against the api."""
    headers = _headers(_token())
    refused = False
    with requests.Session() as http:
        for code in _codes():
            body = {"code": code, "nonce": uuid.uuid4().hex, "direction": direction}
            response = http.post(f"{api}/v1/redemptions", json=body, headers=headers, timeout=TIMEOUT_S)
            if response.status_code != 200:
                console.print(f"error for {code}: {response.status_code} {response.text}", style="yellow")
                raise typer.Exit(2)
            answer = response.json()
            _show(code, answer["ok"], answer["result"], answer["message"])
            refused |= not answer["ok"]
    raise typer.Exit(1 if refused else 0)


def _load(state_path: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads(state_path.read_text())
    except (OSError, ValueError) as exc:
        console.print(f"[bold]error:[/bold] cannot read the gate state {state_path}: {exc}", style="red")
        raise typer.Exit(2) from None
    return state


def _save(state_path: Path, state: dict[str, Any]) -> None:
    temporary = state_path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state))
    temporary.replace(state_path)


@gate_app.command("snapshot")
def download(api: str = ApiOption, state_path: Path = StateOption) -> None:
    """Download the gate's snapshot (replaces the state, keeping scans not uploaded yet)."""
    response = requests.get(f"{api}/v1/gate/snapshot", headers=_headers(_token()), timeout=60)
    if response.status_code != 200:
        console.print(f"[bold]error:[/bold] {response.status_code} {response.text}", style="red")
        raise typer.Exit(2)
    state = offline_gate.from_snapshot(response.json())
    if state_path.exists():
        state["pending"] = _load(state_path)["pending"]
    _save(state_path, state)
    console.print(f"snapshot of {len(state['states'])} tickets saved to {state_path}")


@gate_app.command("offline")
def offline(state_path: Path = StateOption, direction: Direction = DirectionOption) -> None:
    """Decide codes from stdin locally, from the saved snapshot; keep the scans for ``sync``."""
    state = _load(state_path)
    refused = False
    for code in _codes():
        answer = offline_gate.scan(state, code, direction, clock.now())
        _save(state_path, state)
        _show(code, answer.ok, answer.result)
        refused |= not answer.ok
    raise typer.Exit(1 if refused else 0)


@gate_app.command("sync")
def sync(api: str = ApiOption, state_path: Path = StateOption) -> None:
    """Upload the scans kept offline, then fetch what changed since the last cursor."""
    state = _load(state_path)
    headers = _headers(_token())
    recorded = conflicts = 0
    with requests.Session() as http:
        for batch in offline_gate.upload_batches(state, UPLOAD_BATCH):
            response = http.post(f"{api}/v1/gate/scans", json={"scans": batch}, headers=headers, timeout=60)
            if response.status_code != 200:
                console.print(
                    f"[bold]error:[/bold] upload refused: {response.status_code} {response.text}", style="red"
                )
                raise typer.Exit(2)
            report = response.json()
            for outcome in report["outcomes"]:
                if outcome["conflict"]:
                    console.print(f"conflict {outcome['nonce']}: {outcome['conflict']}", style="yellow")
            recorded += report["recorded"]
            conflicts += report["conflicts"]
            offline_gate.confirm(state, {o["nonce"] for o in report["outcomes"] if o["status"] != "rejected"})
            _save(state_path, state)
        response = http.get(f"{api}/v1/gate/deltas", params={"cursor": state["cursor"]}, headers=headers, timeout=60)
        if response.status_code == 200:
            offline_gate.apply_deltas(state, response.json())
            _save(state_path, state)
    console.print(f"synced: {recorded} scans recorded, {conflicts} conflicts, {len(state['pending'])} still pending")


def register(app: typer.Typer) -> None:
    app.add_typer(gate_app, name="gate")
