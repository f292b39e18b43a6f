"""Database commands: ``cardpipe migrate``."""

from __future__ import annotations

import typer

from cardpipe.migrate import upgrade
from cardpipe.settings import get_settings


def migrate(revision: str = typer.Argument("head", help="Alembic revision to upgrade to.")) -> None:
    """Create or upgrade the database schema."""
    settings = get_settings()
    upgrade(settings.effective_database_url, revision)
    typer.echo(f"database at revision {revision}")


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate)
