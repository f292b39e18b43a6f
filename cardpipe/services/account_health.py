"""Official accounts WeChat refuses to serve because of their configuration (wrong AppSecret,
server IP not whitelisted (40164), unknown appid…).

Retrying such an account every scheduler tick only repeats the refusal (and once logged a
traceback a minute per account). Instead its credential work backs off exponentially, from
``FIRST_BACKOFF_S`` to ``MAX_BACKOFF_S``, the state is recorded on the account (shown in its
status and on ``/ops``), and one log line is written per change of state: when the error first
appears or changes, and when the account recovers. Registering new secrets clears the state.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from cardpipe import clock
from models import OfficialAccount
from wechat.errors import ConfigurationError

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 60.0
MAX_BACKOFF_S = 3600.0


def backoff_s(failures: int) -> float:
    return min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2.0 ** max(0, failures - 1))


def describe(error: ConfigurationError) -> str:
    return f"errcode {error.errcode}: {error.errmsg}"[:300]


def healthy_appids(session: Session, *, now: datetime | None = None) -> list[str]:
    """Accounts whose credential work may run now (no configuration error, or its backoff is over)."""
    now = now or clock.now()
    return list(
        session.scalars(
            select(OfficialAccount.appid)
            .where(or_(OfficialAccount.config_retry_at.is_(None), OfficialAccount.config_retry_at <= now))
            .order_by(OfficialAccount.id)
        )
    )


def backing_off(session: Session, appid: str, *, now: datetime | None = None) -> bool:
    retry_at = session.scalar(select(OfficialAccount.config_retry_at).where(OfficialAccount.appid == appid))
    return retry_at is not None and retry_at > (now or clock.now())


def record_failure(session: Session, appid: str, error: ConfigurationError, *, now: datetime | None = None) -> None:
    """One more configuration failure: back off further; log only if the error is new."""
    now = now or clock.now()
    account = session.scalars(
        select(OfficialAccount).where(OfficialAccount.appid == appid).with_for_update()
    ).one_or_none()
    if account is None:
        return
    message = describe(error)
    if (account.config_error or "").partition(":")[0] != message.partition(":")[0]:  # a new errcode
        log.warning("official account %s: WeChat refuses its configuration (%s); backing off", appid, message)
        account.config_error_since = now
    account.config_error = message
    account.config_failures = (account.config_failures or 0) + 1
    account.config_retry_at = now + timedelta(seconds=backoff_s(account.config_failures))


def record_success(session: Session, appid: str) -> None:
    """Credentials came through: clear a recorded configuration error (logged once)."""
    cleared = session.execute(
        update(OfficialAccount)
        .where(OfficialAccount.appid == appid, OfficialAccount.config_error.is_not(None))
        .values(config_error=None, config_error_since=None, config_retry_at=None, config_failures=0)
        .returning(OfficialAccount.id)
        .execution_options(synchronize_session=False)
    ).first()
    if cleared is not None:
        log.info("official account %s: credentials work again; configuration error cleared", appid)
