"""WeChat protocol commands: ``sign-ext`` (the online signature checker's equivalent)."""

from __future__ import annotations

import typer

from wechat.signing import CardExt, sort_concat


def sign_ext(
    api_ticket: str = typer.Option(..., help="The wx_card api_ticket."),
    card_id: str = typer.Option(..., help="The card_id (signed, but not part of cardExt)."),
    timestamp: int = typer.Option(..., help="Unix seconds."),
    nonce: str = typer.Option(..., help="nonce_str."),
    code: str | None = typer.Option(None, help="Custom code (custom-code cards only)."),
    openid: str | None = typer.Option(None, help="OA openid (bind_openid cards only)."),
    outer_str: str | None = typer.Option(None, help="Channel value; not signed."),
    explain: bool = typer.Option(False, help="Also print the sorted values and the hashed string."),
) -> None:
    """Print the cardExt JSON string for the given values."""
    ext = CardExt(timestamp=timestamp, nonce_str=nonce, code=code, openid=openid, outer_str=outer_str)
    if explain:
        values = sorted(v for v in ext.signed_values(api_ticket, card_id) if v)
        typer.echo("sorted values:")
        for value in values:
            typer.echo(f"  {value}")
        typer.echo(f"hashed string: {sort_concat(values)}")
        typer.echo(f"signature: {ext.signature(api_ticket, card_id)}")
    typer.echo(ext.to_json(api_ticket, card_id))


def register(app: typer.Typer) -> None:
    app.command("sign-ext")(sign_ext)
