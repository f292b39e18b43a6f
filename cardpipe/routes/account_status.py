"""Admin: one official account's outbound state — credential versions and expiries, the 45009
block and why, and the call counters. Token and ticket values never leave the server."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field
from sqlalchemy import select

from cardpipe.db import session_scope
from cardpipe.routes.accounts import AppIdPath
from cardpipe.routes.auth import AdminOnly
from cardpipe.routes.schemas import ERRORS, ErrorResponse
from cardpipe.runtime import credential_store
from models import CredentialKind, OfficialAccount

router = APIRouter(prefix="/v1/admin", tags=["accounts"], dependencies=[AdminOnly], responses=ERRORS)


class CredentialOut(BaseModel):
    version: int
    expires_at: datetime
    expires_in_s: int


class QuotaOut(BaseModel):
    blocked: bool = Field(description="45009 seen: outbound work of this account waits")
    blocked_until: datetime | None = Field(description="When WeChat resets the daily quota at the latest")
    reason: str | None
    next_probe_in_s: float | None = Field(description="When one call is let through to see if the quota is back")
    minute_pause_s: float | None = Field(description="Left of a 45011 pause (per-minute quota)")


class ConfigurationOut(BaseModel):
    error: str = Field(description="What WeChat said (errcode and message)")
    since: datetime | None
    retry_at: datetime | None = Field(description="Credential work for this account waits until then")
    failures: int


class AccountStatusOut(BaseModel):
    appid: str
    use_stable_token: bool
    configuration_error: ConfigurationOut | None = Field(
        description="WeChat refuses the account's configuration (wrong secret, IP not whitelisted…): backing off"
    )
    access_token: CredentialOut | None
    card_ticket: CredentialOut | None
    quota: QuotaOut
    counters: dict[str, int] = Field(description="calls, token/ticket fetches, token_invalid, quota errors…")


@router.get(
    "/official-accounts/{appid}/status",
    response_model=AccountStatusOut,
    responses={404: {"model": ErrorResponse, "description": "No such official account"}},
)
def get_account_status(appid: AppIdPath) -> AccountStatusOut:
    with session_scope() as session:
        account = session.scalars(select(OfficialAccount).where(OfficialAccount.appid == appid)).one_or_none()
        if account is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no official account {appid!r}")
        use_stable = account.use_stable_token
        configuration = (
            None
            if account.config_error is None
            else ConfigurationOut(
                error=account.config_error,
                since=account.config_error_since,
                retry_at=account.config_retry_at,
                failures=account.config_failures,
            )
        )
    store = credential_store()
    now = time.time()
    stored = {kind: store.stored(appid, kind) for kind in CredentialKind}
    credentials = {
        kind: None
        if value is None
        else CredentialOut(
            version=value.version,
            expires_at=datetime.fromtimestamp(value.expires_at, UTC),
            expires_in_s=max(0, int(value.expires_at - now)),
        )
        for kind, value in stored.items()
    }
    quota = store.guard.status(appid)
    return AccountStatusOut(
        appid=appid,
        use_stable_token=use_stable,
        configuration_error=configuration,
        access_token=credentials[CredentialKind.ACCESS_TOKEN],
        card_ticket=credentials[CredentialKind.CARD_TICKET],
        quota=QuotaOut(
            blocked=quota.blocked,
            blocked_until=quota.blocked_until,
            reason=quota.reason,
            next_probe_in_s=quota.next_probe_in_s,
            minute_pause_s=quota.minute_pause_s,
        ),
        counters=quota.counters,
    )
