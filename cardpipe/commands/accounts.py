"""``cardpipe account add-oa|add-mp``: register accounts. Secrets come from the environment or a
hidden prompt, never from the command line (it would land in shell history and ``ps``)."""

from __future__ import annotations

import typer

from cardpipe.db import session_scope
from cardpipe.services import accounts

account_app = typer.Typer(no_args_is_help=True, help="Register official accounts and mini programs.")


@account_app.command("add-oa")
def add_official_account(
    appid: str = typer.Option(..., help="Official account appid."),
    app_secret: str = typer.Option(..., envvar="CARDPIPE_OA_SECRET", prompt=True, hide_input=True),
    server_token: str = typer.Option(..., envvar="CARDPIPE_OA_SERVER_TOKEN", prompt=True, hide_input=True),
    encoding_aes_key: str | None = typer.Option(None, envvar="CARDPIPE_OA_AES_KEY", help="Safe-mode key."),
    safe_mode: bool = typer.Option(False, help="The server URL is in safe mode: refuse plain pushes."),
    original_id: str | None = typer.Option(None, help="gh_… original id."),
    name: str = typer.Option("", help="Display name."),
    stable_token: bool = typer.Option(True, help="Use /cgi-bin/stable_token."),
) -> None:
    """Register or update an official account."""
    try:
        with session_scope() as session:
            accounts.upsert_official_account(
                session,
                accounts.OfficialAccountInput(
                    appid=appid,
                    app_secret=app_secret,
                    server_token=server_token,
                    encoding_aes_key=encoding_aes_key,
                    safe_mode=safe_mode,
                    original_id=original_id,
                    name=name,
                    use_stable_token=stable_token,
                ),
            )
    except accounts.AccountError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"official account {appid} saved")


@account_app.command("add-mp")
def add_mini_program(
    appid: str = typer.Option(..., help="Mini program appid."),
    official_account: str = typer.Option(..., help="Appid of the bound official account."),
    app_secret: str = typer.Option(..., envvar="CARDPIPE_MP_SECRET", prompt=True, hide_input=True),
    name: str = typer.Option("", help="Display name."),
) -> None:
    """Register or update a mini program bound to an official account."""
    try:
        with session_scope() as session:
            accounts.upsert_mini_program(session, appid, app_secret, official_account, name)
    except (accounts.UnknownAccount, accounts.AccountError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"mini program {appid} saved")


def register(app: typer.Typer) -> None:
    app.add_typer(account_app, name="account")
