"""Ops: the last hour of per-minute samples behind the ``/ops`` charts, and credential states."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query
from pydantic import BaseModel

from cardpipe.db import session_scope
from cardpipe.routes.auth import AdminOnly
from cardpipe.routes.schemas import ERRORS
from cardpipe.runtime import redis_client
from cardpipe.services.ops_history import KEPT_MINUTES, credential_states, history

router = APIRouter(prefix="/ops", tags=["ops"], dependencies=[AdminOnly], responses=ERRORS)


class CredentialOut(BaseModel):
    appid: str
    kind: str
    version: int
    expires_at: datetime
    rotated_at: datetime | None


class HistoryOut(BaseModel):
    #: End of each minute (epoch seconds), oldest first.
    minutes: list[int]
    #: series name → label (event id, queue, errcode, "appid kind", p50/p99) → one value per minute.
    series: dict[str, dict[str, list[float | None]]]
    credentials: list[CredentialOut]


@router.get("/history", response_model=HistoryOut)
def get_history(
    minutes: int = Query(60, ge=1, le=KEPT_MINUTES, description="How many minutes back, newest last."),
) -> HistoryOut:
    recorded = history(redis_client(), minutes=minutes)
    with session_scope() as session:
        credentials = [CredentialOut.model_validate(c, from_attributes=True) for c in credential_states(session)]
    return HistoryOut(minutes=recorded.minutes, series=recorded.series, credentials=credentials)
