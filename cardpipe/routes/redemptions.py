"""Gate redemption, ticket revocation and the per-event redemption counts.

``POST /v1/redemptions`` answers from the database alone (one transaction); the WeChat consume
is queued after the commit. The gates' requests take ``routes.scan_fast_path`` in front of
FastAPI, through the same :func:`reply_to_scan`. A refusal of the *ticket* is a 200 with ``ok: false`` and its
reason, because the scan itself was fine; a malformed or unusable *scan* is a 4xx.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

from fastapi import APIRouter, BackgroundTasks, HTTPException, Response, status
from pydantic import BaseModel, ConfigDict, Field

from cardpipe.db import session_scope
from cardpipe.routes.auth import AdminOnly, GateScope
from cardpipe.routes.schemas import ERRORS, ErrorResponse, EventId, InboundModel, TicketId, Unprocessable
from cardpipe.services import redemption_report, redemptions, revocations
from cardpipe.services.checkin.gates import GateIdentity
from cardpipe.services.outbox import Intent
from cardpipe.services.scan_answers import Scan
from cardpipe.services.scan_fields import ScanFields
from models import ConsumeSync, Direction, RedemptionResult
from workers.outbox import flush, sender
from workers.redemptions import make_code_unavailable

router = APIRouter(tags=["redemptions"], responses=ERRORS)


class RedemptionIn(ScanFields, InboundModel):
    """A scan, as a gate sends it (the rules of its fields: ``services.scan_fields``)."""


class RedemptionOut(BaseModel):
    ok: bool
    result: RedemptionResult = Field(description="ok, or why the ticket is refused")
    message: str
    code: str
    gate: str
    nonce: str
    ticket_id: int | None
    event_id: int | None
    answered_at: datetime = Field(description="When this scan was first answered")
    redeemed_at: datetime | None = Field(description="ok: now; already_redeemed: when the ticket was let in")
    redeemed_gate: str | None = Field(description="The gate that let the ticket in (wechat:… if WeChat did)")
    replayed: bool = Field(description="This nonce was answered before: the stored answer, nothing changed")
    direction: Direction
    list_id: int | None = Field(description="The check-in list whose rules decided the scan")


SCAN_ERRORS: dict[int | str, dict[str, object]] = {
    409: {"model": ErrorResponse, "description": "The nonce was already used for a different scan"},
    422: {
        "model": Unprocessable,
        "description": "Malformed scan, unknown gate event, a code of several events, or a scan naming another "
        "gate or event than its gate token's",
    },
}


def _scan_of(body: RedemptionIn, identity: GateIdentity | None) -> Scan:
    """The scan, scoped to the gate's own event and list when it scans under its own token."""
    if identity is None:
        if body.gate is None:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "gate is required with a shared gate token")
        return Scan(body.code, body.gate, body.nonce, body.card_id, body.event_id, body.direction)
    if body.gate is not None and body.gate != identity.name:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"this token is gate {identity.name!r}'s")
    if body.event_id is not None and body.event_id != identity.event_id:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"this gate scans for event {identity.event_id}")
    return Scan(body.code, identity.name, body.nonce, body.card_id, identity.event_id, body.direction, identity.list_id)


@dataclass(frozen=True, slots=True)
class ScanReply:
    """What ``POST /v1/redemptions`` answers, serialized, and the consume intents to send after it."""

    status: int
    body: bytes
    intents: list[Intent]


def _refusal(status_code: int, detail: str) -> ScanReply:
    return ScanReply(status_code, json.dumps({"detail": detail}, ensure_ascii=False).encode(), [])


def reply_to_scan(body: RedemptionIn, identity: GateIdentity | None) -> ScanReply:
    """Redeem one well-formed scan under the caller's gate identity (blocking: call it from a
    worker thread). The answer is serialized here, once: FastAPI re-validating the response model
    cost a third of this endpoint's CPU."""
    try:
        answer, intents = redemptions.redeem_and_queue(_scan_of(body, identity))
    except HTTPException as exc:
        return _refusal(exc.status_code, str(exc.detail))
    except redemptions.NonceReused as exc:
        return _refusal(status.HTTP_409_CONFLICT, str(exc))
    except redemptions.RedemptionRefused as exc:
        return _refusal(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc))
    out = RedemptionOut.model_construct(
        ok=answer.ok,
        result=answer.result,
        message=answer.message(),
        code=answer.code,
        gate=answer.gate,
        nonce=answer.nonce,
        ticket_id=answer.ticket_id,
        event_id=answer.event_id,
        answered_at=answer.answered_at,
        redeemed_at=answer.redeemed_at,
        redeemed_gate=answer.redeemed_gate,
        replayed=answer.replayed,
        direction=answer.direction,
        list_id=answer.list_id,
    )
    return ScanReply(status.HTTP_200_OK, out.model_dump_json().encode(), intents)


@router.post("/v1/redemptions", response_model=RedemptionOut, responses=SCAN_ERRORS)
def redeem(body: RedemptionIn, background: BackgroundTasks, identity: GateScope) -> Response:
    """Redeem a scanned code at a gate (an entry, or an exit with ``direction: exit``), decided by
    the gate's check-in list: answered at once, never waiting on WeChat (nor on the queue: the
    consume message is sent after the answer). The gates' requests are answered by
    ``routes.scan_fast_path`` in front of the app, through the same :func:`reply_to_scan`; this
    route documents the endpoint and answers what the fast path leaves to FastAPI."""
    reply = reply_to_scan(body, identity)
    if reply.intents:
        background.add_task(flush, reply.intents)
    return Response(reply.body, status_code=reply.status, media_type="application/json")


class RevocationIn(InboundModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: str = Field(default="", max_length=64, description="Shown to the holder by WeChat (e.g. 退款)")


class RevocationOut(BaseModel):
    ticket_id: int
    revoked_at: datetime
    reason: str
    wechat_sync: ConsumeSync = Field(description="pending: code/unavailable queued; not_needed: never handed out")
    already_revoked: bool


@router.post(
    "/v1/tickets/{ticket_id}/revoke",
    response_model=RevocationOut,
    dependencies=[AdminOnly],
    responses={
        404: {"model": ErrorResponse, "description": "No such ticket"},
        409: {"model": ErrorResponse, "description": "The ticket was redeemed or deleted"},
    },
)
def revoke(ticket_id: TicketId, body: RevocationIn | None = None) -> RevocationOut:
    """Revoke a ticket: later scans answer ``revoked``; its WeChat code is made unavailable."""
    reason = body.reason if body else ""
    try:
        outcome = revocations.revoke_ticket(ticket_id, reason, queue_unavailable=sender(make_code_unavailable))
    except revocations.TicketNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except revocations.NotRevocable as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return RevocationOut(
        ticket_id=outcome.ticket_id,
        revoked_at=outcome.revoked_at,
        reason=outcome.reason,
        wechat_sync=outcome.wechat_sync,
        already_revoked=outcome.already_revoked,
    )


class ResultCounts(BaseModel):
    ok: int = 0
    invalid: int = 0
    not_claimed: int = 0
    already_redeemed: int = 0
    revoked: int = 0
    deleted: int = 0
    wrong_event: int = 0
    outside_window: int = 0
    limit_reached: int = 0
    day_limit_reached: int = 0
    already_inside: int = 0
    not_inside: int = 0
    capacity_full: int = 0
    not_on_list: int = 0


class GateCounts(BaseModel):
    gate: str
    total: int
    by_result: ResultCounts


class SyncCounts(BaseModel):
    pending: int = 0
    done: int = 0
    disagrees: int = 0
    not_needed: int = 0


class DisagreementOut(BaseModel):
    kind: str = Field(description="consume (redemption vs WeChat) or revocation")
    ticket_id: int | None
    code: str
    gate: str | None
    detail: str
    recorded_at: datetime


class EventRedemptionsOut(BaseModel):
    event_id: int
    total: int
    by_result: ResultCounts
    by_gate: list[GateCounts]
    wechat_consume: SyncCounts = Field(description="Where the WeChat consume of each entry stands")
    wechat_revocation: SyncCounts = Field(description="Where code/unavailable of each revocation stands")
    disagreements: list[DisagreementOut] = Field(description="WeChat and we disagree: newest first, at most 100")


@router.get(
    "/v1/events/{event_id}/redemptions",
    response_model=EventRedemptionsOut,
    dependencies=[AdminOnly],
    responses={404: {"model": ErrorResponse, "description": "No such event"}},
)
def event_redemptions(event_id: EventId) -> EventRedemptionsOut:
    """Scans of an event counted by gate and reason, WeChat sync state, and disagreements."""
    try:
        with session_scope() as session:
            summary = redemption_report.event_redemptions(session, event_id)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    by_result = summary.by_result()
    return EventRedemptionsOut(
        event_id=event_id,
        total=sum(by_result.values()),
        by_result=ResultCounts(**by_result),
        by_gate=[
            GateCounts(gate=gate, total=sum(counts.values()), by_result=ResultCounts(**counts))
            for gate, counts in sorted(summary.by_gate.items())
        ],
        wechat_consume=SyncCounts(**summary.consume_sync),
        wechat_revocation=SyncCounts(**summary.revocation_sync),
        disagreements=[DisagreementOut(**asdict(d)) for d in summary.disagreements],
    )
