"""The account-health gate every per-account actor goes through.

An account whose last WeChat call failed on its configuration (wrong secret, IP not whitelisted,
unknown appid) backs off (``cardpipe.services.account_health``): the scheduler's ticks skip it, and
an actor that runs for it anyway does nothing until then. A configuration error is recorded (one log
line per change, no traceback) and not retried; any other error propagates to dramatiq's retries.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select

from cardpipe.db import session_scope
from cardpipe.services import account_health
from models import OfficialAccount
from wechat.errors import ConfigurationError


def healthy_appids() -> list[str]:
    """The accounts whose credential work may run now (not backing off a configuration error)."""
    with session_scope() as session:
        return account_health.healthy_appids(session)


@contextmanager
def configuration_watch(appid: str) -> Iterator[bool]:
    """Yields whether to go ahead (False while the account backs off a configuration error);
    records a ConfigurationError (one log line per change, no traceback, no retry) or success."""
    with session_scope() as session:
        if account_health.backing_off(session, appid):
            yield False
            return
    try:
        yield True
    except ConfigurationError as exc:
        with session_scope() as session:
            account_health.record_failure(session, appid, exc)
        return
    with session_scope() as session:
        account_health.record_success(session, appid)


def account_id(appid: str) -> int:
    with session_scope() as session:
        found = session.scalar(select(OfficialAccount.id).where(OfficialAccount.appid == appid))
    if found is None:
        raise LookupError(f"no official account {appid!r}")
    return found
