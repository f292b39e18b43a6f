"""``cardpipe scheduler`` and the ops side of credentials: ``cardpipe credentials refresh|status|unblock``.

Values of tokens and tickets are never printed: only versions, expiries and quota state.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import typer

import workers.resign  # noqa: F401  (a rotation by ``credentials refresh`` queues the re-sign)
from cardpipe.runtime import credential_store
from cardpipe.settings import get_settings
from models import CredentialKind

credentials_app = typer.Typer(no_args_is_help=True, help="Official account credentials and quota state.")


def scheduler() -> None:
    """Run the scheduler: waits for the leader lease, then enqueues refreshes and reconciles."""
    # Imported on use: it loads every actor module, which no other command needs.
    import scheduler as scheduler_module

    raise typer.Exit(scheduler_module.run())


def _expiry(expires_at: float) -> str:
    left = int(expires_at - time.time())
    return f"expires {datetime.fromtimestamp(expires_at, UTC):%Y-%m-%d %H:%M:%S}Z ({left}s left)"


@credentials_app.command("refresh")
def refresh(
    appid: str = typer.Argument(..., help="Official account appid."),
    force: bool = typer.Option(False, "--force", help="Fetch even if still valid (stable_token: force_refresh)."),
) -> None:
    """Refresh the account's access_token and card api_ticket now (the one writer, under its lock)."""
    store = credential_store()
    margin = get_settings().credential_refresh_margin_s
    try:
        for kind in (CredentialKind.ACCESS_TOKEN, CredentialKind.CARD_TICKET):
            outcome = store.refresh(appid, kind, min_validity_s=margin, force=force)
            stored = outcome.credential
            what = "fetched" if outcome.fetched else "still valid"
            rotated = ", rotated: re-sign of outstanding tickets queued" if outcome.rotated else ""
            typer.echo(f"{kind}: {what}, version {stored.version}, {_expiry(stored.expires_at)}{rotated}")
    except LookupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@credentials_app.command("status")
def status(appid: str = typer.Argument(..., help="Official account appid.")) -> None:
    """Versions and expiries of the stored credentials, quota state and counters."""
    store = credential_store()
    for kind in (CredentialKind.ACCESS_TOKEN, CredentialKind.CARD_TICKET):
        stored = store.stored(appid, kind)
        typer.echo(f"{kind}: " + (f"version {stored.version}, {_expiry(stored.expires_at)}" if stored else "none"))
    quota = store.guard.status(appid)
    if quota.blocked:
        typer.echo(f"BLOCKED until {quota.blocked_until:%Y-%m-%d %H:%M}Z: {quota.reason}")
        typer.echo(f"next quota probe in {quota.next_probe_in_s:.0f}s")
    else:
        typer.echo("quota: ok")
    for name, value in sorted(quota.counters.items()):
        typer.echo(f"  {name}: {value}")


@credentials_app.command("unblock")
def unblock(appid: str = typer.Argument(..., help="Official account appid.")) -> None:
    """End a 45009 block now (e.g. after ``clear_quota``); outbound work resumes."""
    ended = credential_store().guard.unblock(appid)
    typer.echo("block ended" if ended else "was not blocked")


def register(app: typer.Typer) -> None:
    app.command("scheduler")(scheduler)
    app.add_typer(credentials_app, name="credentials")
