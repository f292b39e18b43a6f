"""The gate's own endpoints (under its own token): the offline snapshot, deltas since a cursor,
and the upload of scans decided offline; and the gate web page with its script and style,
served from the package (no CDN: venues are often offline, and a CSP allows only 'self').
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from fastapi import APIRouter, BackgroundTasks, HTTPException, Query, status
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from cardpipe.db import session_scope
from cardpipe.routes.auth import OwnGate
from cardpipe.routes.hygiene import API_CSP, page_csp
from cardpipe.routes.schemas import ERRORS
from cardpipe.services import redemption_sync
from cardpipe.services.checkin import offline_sync, snapshot
from models import Direction, RedemptionResult
from workers.outbox import flush
from workers.redemptions import consume_redeemed_codes

router = APIRouter(prefix="/v1/gate", tags=["gate"], responses=ERRORS)
page_router = APIRouter(tags=["gate"])
SCANS_PATH_PATTERN = r"/v1/gate/scans"
#: An offline spell's upload: up to ``offline_sync.MAX_BATCH`` scans of ~150 bytes.
SCANS_MAX_BYTES = 1 << 20
_PAGE_DIR = Path(__file__).parent / "gate_page"
_NO_STORE = {"Cache-Control": "no-store"}
#: The page's own scripts and styles only (they are files of this origin; nothing inline).
_PAGE_CSP = page_csp((_PAGE_DIR / "gate.html").read_text(encoding="utf-8"))
#: A service worker runs under the CSP delivered with its own script, not the page's: the API
#: default (``default-src 'none'``) would refuse its fetches of the page's files, so the install
#: fails and the page never reopens offline. It may fetch from this origin, nothing else.
_WORKER_CSP = f"{API_CSP}; connect-src 'self'"


class OfflineScanIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    nonce: str = Field(min_length=8, max_length=64, pattern=r"^[0-9A-Za-z_-]+$")
    code: str = Field(min_length=1, max_length=32, pattern=r"^[\x21-\x7e]+$")
    direction: Direction = Direction.ENTRY
    scanned_at: datetime = Field(description="When the gate scanned it (with a timezone)")
    result: RedemptionResult = Field(description="What the gate showed: ok, or its reason for refusing")


class UploadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scans: list[OfflineScanIn] = Field(max_length=offline_sync.MAX_BATCH)


class OutcomeOut(BaseModel):
    nonce: str
    status: str = Field(description="recorded, duplicate (merged before) or rejected (nonce reused)")
    conflict: str | None = Field(description="The server would have decided otherwise: why")


class UploadOut(BaseModel):
    recorded: int
    duplicates: int
    rejected: int
    conflicts: int
    outcomes: list[OutcomeOut]


@router.get("/snapshot")
def gate_snapshot(gate: OwnGate) -> JSONResponse:
    """Everything the gate needs to decide scans alone: its list's rules, every ticket of the
    event as a keyed hash with its state and history, and the cursor for ``/deltas``."""
    with session_scope() as session:
        made = snapshot.snapshot(session, gate)
    return JSONResponse(made.body, headers=_NO_STORE)


@router.get("/deltas")
def gate_deltas(
    gate: OwnGate, cursor: datetime = Query(description="The last snapshot's or delta's cursor")
) -> JSONResponse:
    """What changed since the cursor: ticket states, histories on the list, the rules."""
    if cursor.tzinfo is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "cursor needs a timezone")
    with session_scope() as session:
        body = snapshot.deltas(session, gate, cursor)
    return JSONResponse(body, headers=_NO_STORE)


@router.post("/scans", response_model=UploadOut)
def upload_scans(body: UploadIn, gate: OwnGate, background: BackgroundTasks) -> UploadOut:
    """Scans this gate decided offline: merged idempotently per nonce; conflicts flagged."""
    if any(scan.scanned_at.tzinfo is None for scan in body.scans):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "scanned_at needs a timezone")
    scans = [offline_sync.OfflineScan(s.nonce, s.code, s.direction, s.scanned_at, s.result) for s in body.scans]
    with session_scope() as session:
        report = offline_sync.merge(session, gate, scans)
        # On the connection: Core's multi-row insert, not the ORM's bulk machinery.
        consumes = redemption_sync.queue_consumes(
            session.connection(), consume_redeemed_codes.actor_name, report.consumes
        )
    background.add_task(flush, consumes)
    return UploadOut(
        recorded=report.recorded,
        duplicates=report.duplicates,
        rejected=report.rejected,
        conflicts=report.conflicts,
        outcomes=[OutcomeOut(nonce=o.nonce, status=o.status, conflict=o.conflict) for o in report.outcomes],
    )


@page_router.get("/gate", response_class=HTMLResponse, include_in_schema=False)
def gate_page() -> FileResponse:
    """The gate page: the gate's token is typed in once and kept in the browser."""
    return FileResponse(
        _PAGE_DIR / "gate.html",
        media_type="text/html",
        headers={"Content-Security-Policy": _PAGE_CSP, "Cache-Control": "no-cache"},
    )


@page_router.get("/gate/assets/{name}", include_in_schema=False)
def gate_asset(name: str) -> FileResponse:
    media = {"gate.js": "text/javascript", "gate.css": "text/css", "rules.js": "text/javascript"}
    if name not in media:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such asset")
    return FileResponse(_PAGE_DIR / name, media_type=media[name])


@page_router.get("/gate/sw.js", include_in_schema=False)
def gate_service_worker() -> FileResponse:
    """Keeps the page's files for a browser reopened offline; allowed to control ``/gate``."""
    return FileResponse(
        _PAGE_DIR / "sw.js",
        media_type="text/javascript",
        headers={
            "Service-Worker-Allowed": "/gate",
            "Cache-Control": "no-cache",
            "Content-Security-Policy": _WORKER_CSP,
        },
    )
