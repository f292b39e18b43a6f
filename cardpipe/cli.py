"""The ``cardpipe`` console script. Each command group lives in ``cardpipe/commands/``."""

from __future__ import annotations

import typer

from cardpipe.commands import accounts as account_commands
from cardpipe.commands import db as db_commands
from cardpipe.commands import demo as demo_commands
from cardpipe.commands import dlq as dlq_commands
from cardpipe.commands import doctor as doctor_commands
from cardpipe.commands import events as event_commands
from cardpipe.commands import fake as fake_commands
from cardpipe.commands import gate as gate_commands
from cardpipe.commands import redeem as redeem_commands
from cardpipe.commands import scheduler as scheduler_commands
from cardpipe.commands import serve as serve_commands
from cardpipe.commands import venue as venue_commands
from cardpipe.commands import wechat as wechat_commands
from cardpipe.logsetup import configure_logging

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="cardpipe: pre-issue WeChat card tickets to Mini Program users at event scale.",
)
account_commands.register(app)
db_commands.register(app)
demo_commands.register(app)
dlq_commands.register(app)
doctor_commands.register(app)
event_commands.register(app)
fake_commands.register(app)
gate_commands.register(app)
redeem_commands.register(app)
scheduler_commands.register(app)
serve_commands.register(app)
venue_commands.register(app)
wechat_commands.register(app)


@app.callback()
def _setup(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level.")) -> None:
    configure_logging(verbose=verbose)


def main() -> None:
    app()
