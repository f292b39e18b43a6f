"""Admin: create an event, import its orders, start pre-issue and watch its progress.

Creating an event calls WeChat inline (``card/get`` to check a given card, or ``card/create``):
the admin needs the card_id in the answer. The order import streams the upload to a temporary
file (memory stays flat whatever the file size) and imports it in one transaction. Starting
pre-issue only marks the event and queues the planner.
"""

from __future__ import annotations

import tempfile
from datetime import datetime
from typing import IO, Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from cardpipe.db import session_scope
from cardpipe.routes.auth import AdminOnly
from cardpipe.routes.schemas import ERRORS, ErrorResponse, EventId, FieldError, InboundModel, Responses, Unprocessable
from cardpipe.runtime import credential_store
from cardpipe.services import events, order_file, order_import
from cardpipe.services.preissue import PreissueError, tracking
from models import CodeMode, Event, MiniProgram, OfficialAccount
from models.event import UNAMBIGUOUS_ALPHABET
from wechat.errors import ConfigurationError, WeChatError
from workers.outbox import flush
from workers.preissue import plan_preissue

router = APIRouter(prefix="/v1/admin/events", tags=["events"], dependencies=[AdminOnly], responses=ERRORS)

#: The import endpoint takes files, so it has its own body limit (``max_import_bytes``).
IMPORT_PATH_PATTERN = r"/v1/admin/events/[^/]+/orders"
APPID = Field(pattern=r"^wx[0-9A-Za-z]{6,30}$", description="WeChat appid (wx…)")
NOT_FOUND: Responses = {404: {"model": ErrorResponse, "description": "No such event"}}
FORMATS = {
    "text/csv": order_file.ImportFormat.CSV,
    "application/csv": order_file.ImportFormat.CSV,
    "application/x-ndjson": order_file.ImportFormat.JSONL,
    "application/jsonl": order_file.ImportFormat.JSONL,
    "application/x-jsonlines": order_file.ImportFormat.JSONL,
}


class CodePolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    length: int = Field(default=12, ge=6, le=20)
    alphabet: str = Field(default=UNAMBIGUOUS_ALPHABET, min_length=2, max_length=62)
    allow_ambiguous: bool = Field(default=False, description="Allow 0/O/o/1/I/l/L in the alphabet")


class EventIn(InboundModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    official_account_appid: str = APPID
    mini_program_appid: str = APPID
    card_id: str | None = Field(default=None, description="Bind an existing ticket card, or…")
    card: events.CardSpec | None = Field(default=None, description="…create one with card/create")
    code_mode: CodeMode = Field(default=CodeMode.CUSTOM, description="For a new card: custom codes or deposit")
    code_policy: CodePolicyIn = Field(default_factory=CodePolicyIn)
    launch_at: AwareDatetime | None = None
    notes: str | None = Field(default=None, max_length=4000)


class EventOut(BaseModel):
    id: int
    name: str
    official_account_appid: str
    mini_program_appid: str
    card_id: str | None
    card_type: str
    card_status: str
    code_mode: str
    code_length: int
    code_alphabet: str
    launch_at: datetime | None
    state: str
    preissue_started_at: datetime | None
    created_at: datetime


class LineErrorOut(BaseModel):
    line: int
    reason: str


class ImportRejectedOut(BaseModel):
    """The import was rejected (``errors`` by line, ``total``), or the request itself is malformed
    (``detail`` lists the fields, as for every endpoint)."""

    detail: str | list[FieldError]
    errors: list[LineErrorOut] = Field(
        default_factory=list, description=f"The first {order_file.MAX_REPORTED} problems"
    )
    total: int = 0


class ConflictOut(BaseModel):
    line: int
    order_no: str
    fields: list[str]


class ImportOut(BaseModel):
    rows: int
    inserted: int
    unchanged: int
    tickets_added: int
    conflicts: list[ConflictOut] = Field(description="Orders stored with other data: not overwritten")
    conflicts_total: int


class PreissueStartedOut(BaseModel):
    event_id: int
    state: str
    progress_url: str


class ProgressOut(BaseModel):
    event_id: int
    state: str
    orders_total: int
    orders_complete: int
    tickets_total: int
    tickets_issued: int
    stock_covered: int = Field(description="Tickets WeChat's stock was raised to cover; `issued` needs all of them")
    preissue_started_at: datetime | None
    tickets_by_state: dict[str, int] | None


def _event_out(session: Session, event: Event) -> EventOut:
    account = session.get(OfficialAccount, event.official_account_id)
    program = session.get(MiniProgram, event.mini_program_id)
    assert account is not None and program is not None
    return EventOut(
        id=event.id,
        name=event.name,
        official_account_appid=account.appid,
        mini_program_appid=program.appid,
        card_id=event.card_id,
        card_type=event.card_type,
        card_status=event.card_status,
        code_mode=event.code_mode,
        code_length=event.code_length,
        code_alphabet=event.code_alphabet,
        launch_at=event.launch_at,
        state=event.state,
        preissue_started_at=event.preissue_started_at,
        created_at=event.created_at,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=EventOut,
    responses={
        422: {"model": Unprocessable, "description": "Malformed request; unusable event, card or code policy"},
        502: {"model": ErrorResponse, "description": "WeChat refused cardpipe's credentials"},
        503: {"model": ErrorResponse, "description": "WeChat busy or over quota; try again"},
    },
)
def create_event(body: EventIn) -> EventOut:
    """Create an event bound to an existing card, or to a card created from ``card``."""
    data = events.EventInput(
        name=body.name,
        oa_appid=body.official_account_appid,
        mp_appid=body.mini_program_appid,
        card_id=body.card_id,
        card_spec=body.card,
        code_mode=body.code_mode,
        code_policy=events.CodePolicy(**body.code_policy.model_dump()),
        launch_at=body.launch_at,
        notes=body.notes,
    )
    try:
        with session_scope() as session:
            event = events.create_event(session, data, card_api=credential_store().card_api(data.oa_appid))
            return _event_out(session, event)
    except events.EventError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except ConfigurationError as exc:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"WeChat refused the call (errcode {exc.errcode})") from None
    except WeChatError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"WeChat unavailable: {exc}") from None


@router.get("/{event_id}", response_model=EventOut, responses=NOT_FOUND)
def get_event(event_id: EventId) -> EventOut:
    try:
        with session_scope() as session:
            return _event_out(session, events.get_event(session, event_id))
    except events.UnknownEvent as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


def _import_format(request: Request, given: order_file.ImportFormat | None) -> order_file.ImportFormat:
    if given is not None:
        return given
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    found = FORMATS.get(content_type)
    if found is None:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "send text/csv or application/x-ndjson, or say ?format=csv|jsonl",
        )
    return found


def _import_file(
    event_id: int, upload: IO[bytes], fmt: order_file.ImportFormat, reject_conflicts: bool
) -> order_import.ImportReport:
    with session_scope() as session:
        return order_import.import_orders(session, event_id, upload, fmt, reject_conflicts=reject_conflicts)


@router.post(
    "/{event_id}/orders",
    response_model=ImportOut,
    responses={
        **NOT_FOUND,
        415: {"model": ErrorResponse, "description": "Neither CSV nor JSON lines"},
        422: {"model": ImportRejectedOut, "description": "Rejected: nothing was stored; problems by line"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        }
    },
)
async def import_orders(
    event_id: EventId,
    request: Request,
    fmt: Annotated[order_file.ImportFormat | None, Query(alias="format")] = None,
    reject_conflicts: bool = Query(False, description="Reject the whole import if any order conflicts"),
) -> ImportOut | JSONResponse:
    """Import orders: CSV with a header (order_no, openid, unionid (optional), ticket_count,
    ticket_class (optional)) or JSON lines with those keys, streamed.

    One import is one transaction. A malformed file (not UTF-8, bad CSV quoting, a missing
    column, a bad row, an order_no twice in the file) is a 422 listing the problems by line, and
    nothing is stored. An order_no already stored with the same data is left alone (importing a
    file again changes nothing); one stored with different data is a conflict: reported by line,
    never overwritten, and the rest of the file is imported — unless ``reject_conflicts`` is set,
    which makes any conflict reject the whole import."""
    chosen = _import_format(request, fmt)
    with tempfile.TemporaryFile() as upload:
        async for chunk in request.stream():
            upload.write(chunk)  # the page cache absorbs it; the import itself runs in a thread
        upload.seek(0)
        try:
            report = await run_in_threadpool(_import_file, event_id, upload, chosen, reject_conflicts)
        except events.UnknownEvent as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        except order_file.ImportRejected as exc:
            body = ImportRejectedOut(
                detail=str(exc),
                errors=[LineErrorOut(line=e.line, reason=e.reason) for e in exc.errors],
                total=exc.total,
            )
            return JSONResponse(body.model_dump(), status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    return ImportOut(
        rows=report.rows,
        inserted=report.inserted,
        unchanged=report.unchanged,
        tickets_added=report.tickets_added,
        conflicts=[ConflictOut(line=c.line, order_no=c.order_no, fields=list(c.fields)) for c in report.conflicts],
        conflicts_total=report.conflicts_total,
    )


@router.post(
    "/{event_id}/preissue",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PreissueStartedOut,
    responses={**NOT_FOUND, 409: {"model": ErrorResponse, "description": "The event has no card"}},
)
def start_preissue(event_id: EventId) -> PreissueStartedOut:
    """Mark the event pre-issuing and queue the planner; progress is at ``progress_url``."""
    try:
        with session_scope() as session:
            state, planner = tracking.start_and_queue_planner(session, event_id, planner_actor=plan_preissue.actor_name)
    except events.UnknownEvent as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except PreissueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    flush([planner])
    return PreissueStartedOut(event_id=event_id, state=state, progress_url=f"{router.prefix}/{event_id}/progress")


@router.get("/{event_id}/progress", response_model=ProgressOut, responses=NOT_FOUND)
def preissue_progress(
    event_id: EventId,
    by_state: bool = Query(True, description="Also count tickets per state (a scan of the event's tickets)"),
) -> ProgressOut:
    try:
        with session_scope() as session:
            progress = tracking.preissue_progress(session, event_id, by_state=by_state)
    except events.UnknownEvent as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return ProgressOut.model_validate(progress, from_attributes=True)
