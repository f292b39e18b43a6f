"""Admin: an event's funnel, and every event's funnel for the ops page."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from cardpipe.db import session_scope
from cardpipe.routes.auth import AdminOnly
from cardpipe.routes.checkin import OccupancyOut
from cardpipe.routes.schemas import ERRORS, ErrorResponse, EventId
from cardpipe.runtime import redis_client
from cardpipe.services.checkin.occupancy import event_occupancy
from cardpipe.services.funnel import UnknownEvent, all_event_ids, event_funnel

router = APIRouter(tags=["ops"], dependencies=[AdminOnly], responses=ERRORS)


class QuotaOut(BaseModel):
    blocked: bool
    blocked_until: datetime | None
    reason: str | None


class FunnelOut(BaseModel):
    event_id: int
    name: str
    card_id: str | None
    card_status: str
    state: str
    orders: int
    tickets_ordered: int
    issued: int
    tickets_by_state: dict[str, int]
    claims_per_minute: float
    wechat_counters: dict[str, int]
    quota: QuotaOut
    config_error: str | None = Field(
        default=None, description="WeChat refuses the account's configuration: credential work is backing off"
    )
    venue: OccupancyOut | None = Field(default=None, description="Gates: inside now, entries, exits, refusals")


@router.get(
    "/v1/events/{event_id}/stats",
    response_model=FunnelOut,
    responses={404: {"model": ErrorResponse, "description": "No such event"}},
)
def event_stats(event_id: EventId) -> FunnelOut:
    try:
        with session_scope() as session:
            return _stats(session, event_id)
    except UnknownEvent as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


@router.get("/ops/events", response_model=list[FunnelOut])
def all_event_stats() -> list[FunnelOut]:
    with session_scope() as session:
        return [_stats(session, event_id) for event_id in all_event_ids(session)]


def _stats(session: Session, event_id: int) -> FunnelOut:
    out = FunnelOut.model_validate(event_funnel(session, redis_client(), event_id), from_attributes=True)
    out.venue = OccupancyOut.model_validate(event_occupancy(session, event_id), from_attributes=True)
    return out
