"""Admin: go-live readiness of an event or an official account, and of everything for ``/ops``.

A readiness check asks WeChat inline (like creating an event does): it is a probe whose answer is
the response. It changes nothing, reads the credentials like any worker (no forced refresh) and
remembers WeChat's passing answers, so polling it costs little.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from cardpipe.db import session_scope
from cardpipe.routes.auth import AdminOnly
from cardpipe.routes.schemas import ERRORS, ErrorResponse, EventId
from cardpipe.runtime import credential_store, redis_client, wechat_http
from cardpipe.services.events import UnknownEvent
from cardpipe.services.queues import QueueMonitor
from cardpipe.services.readiness import checks
from cardpipe.services.readiness.ports import ReadinessPorts
from cardpipe.services.readiness.report import Report
from cardpipe.settings import get_settings
from workers.broker import broker

router = APIRouter(tags=["readiness"], dependencies=[AdminOnly], responses=ERRORS)


class ItemOut(BaseModel):
    key: str = Field(description="Stable id of the check, e.g. oa.credentials, card.get_limit")
    section: str
    title: str
    status: str = Field(description="ok, warning or failing")
    checked: str = Field(description="What was checked")
    detail: str = Field(description="What was found")
    remedy: str | None = Field(description="What the organiser does about it (None when ok)")


class ReportOut(BaseModel):
    scope: str
    ready: bool = Field(description="Nothing failing")
    checked_at: datetime
    counts: dict[str, int]
    items: list[ItemOut]


def ports() -> ReadinessPorts:
    return ReadinessPorts(
        credentials=credential_store(),
        wechat=wechat_http(),
        redis=redis_client(),
        queues=QueueMonitor(broker),
        settings=get_settings(),
    )


def _out(report: Report) -> ReportOut:
    return ReportOut.model_validate(report.as_dict())


@router.get(
    "/v1/admin/events/{event_id}/readiness",
    response_model=ReportOut,
    responses={404: {"model": ErrorResponse, "description": "No such event"}},
)
def event_readiness(event_id: EventId) -> ReportOut:
    """Will this event work at launch? Every item ok / warning / failing, with remedies."""
    try:
        with session_scope() as session:
            return _out(checks.check_event(session, ports(), event_id))
    except UnknownEvent as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


@router.get(
    "/v1/admin/official-accounts/{appid}/readiness",
    response_model=ReportOut,
    responses={404: {"model": ErrorResponse, "description": "No such official account"}},
)
def account_readiness(appid: str) -> ReportOut:
    """The official account's items, its mini programs' and the running system's."""
    try:
        with session_scope() as session:
            return _out(checks.check_account(session, ports(), appid))
    except checks.UnknownAccount as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


@router.get("/ops/readiness", response_model=list[ReportOut])
def all_readiness() -> list[ReportOut]:
    """Every event's readiness, and every official account's that has no event (the ops page)."""
    with session_scope() as session:
        return [_out(report) for report in checks.check_all(session, ports())]
