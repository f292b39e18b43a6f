"""``cardpipe fake-wechat``: run the fake api.weixin.qq.com (control API under ``/__fake__/``)."""

from __future__ import annotations

import typer

from wechat.fake.server import serve_foreground
from wechat.fake.state import FakeConfig


def fake_wechat(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8090, help="Port to listen on."),
    token_ttl: int = typer.Option(7200, min=1, help="access_token lifetime in seconds."),
    ticket_ttl: int = typer.Option(7200, min=1, help="wx_card api_ticket lifetime in seconds."),
    push_timeout: float = typer.Option(5.0, min=0.01, help="Seconds each event push waits for the OA server."),
    seed: int | None = typer.Option(None, help="Seed for fault-injection randomness."),
) -> None:
    """Serve a fake of api.weixin.qq.com until interrupted."""
    config = FakeConfig(token_ttl_s=token_ttl, ticket_ttl_s=ticket_ttl)
    serve_foreground(host, port, config=config, push_timeout_s=push_timeout, seed=seed)


def register(app: typer.Typer) -> None:
    app.command("fake-wechat")(fake_wechat)
