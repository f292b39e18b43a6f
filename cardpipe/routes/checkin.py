"""Admin: an event's check-in lists and gates, who is inside, and offline conflicts.

Lists and gates are made and changed here (a gate's token is in the answer that makes it, and
nowhere else afterwards). Everything is scoped to the event in the path: a list or gate id of
another event is a 404.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime

from fastapi import APIRouter, BackgroundTasks, HTTPException, Path, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cardpipe.db import session_scope
from cardpipe.routes.auth import AdminOnly
from cardpipe.routes.schemas import ERRORS, ErrorResponse, Responses
from cardpipe.services import redemption_sync, ticket_classes
from cardpipe.services.checkin import end_of_event, gates, lists, occupancy, offline_sync
from models import CheckinList, ListPolicy
from workers.outbox import flush
from workers.redemptions import consume_redeemed_codes

router = APIRouter(prefix="/v1/admin/events", tags=["venue"], dependencies=[AdminOnly], responses=ERRORS)
NOT_FOUND: Responses = {404: {"model": ErrorResponse, "description": "No such event, list or gate"}}
REFUSED: Responses = {
    **NOT_FOUND,
    409: {"model": ErrorResponse, "description": "The settings clash (name taken, window…)"},
}
NAME = r"^[^:\x00-\x1f]+$"


class ListIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=64, pattern=NAME)
    policy: ListPolicy = Field(default=ListPolicy.SINGLE, description="single: first entry consumes; multi: re-entry")
    consume_at_end: bool = Field(default=False, description="multi: consume the WeChat cards when the event ends")
    max_entries: int | None = Field(default=None, ge=1, le=1_000_000, description="Entries per ticket, in all")
    max_per_day: int | None = Field(default=None, ge=1, le=1_000_000, description="Entries per ticket per local day")
    entry_after_exit_only: bool = Field(default=False, description="Anti-passback: exit before entering again")
    window_start: datetime | None = Field(default=None, description="No entry before (timezone required)")
    window_end: datetime | None = Field(default=None, description="No entry after (timezone required)")
    capacity: int | None = Field(default=None, ge=1, le=10_000_000, description="Most people inside through it")
    ticket_classes: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=ticket_classes.MAX_CLASSES_PER_LIST,
        description="The ticket classes admitted (the orders' ticket_class); absent or null: every ticket",
    )

    @field_validator("ticket_classes")
    @classmethod
    def _classes(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else ticket_classes.check_classes(value)

    @field_validator("window_start", "window_end")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("window times need a timezone")
        return value

    def settings(self) -> lists.ListSettings:
        return lists.ListSettings(**self.model_dump())


class ListOut(ListIn):
    id: int
    event_id: int
    is_default: bool
    inside_now: int = Field(description="Inside through this list (exact while it has a capacity)")


class GateIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=64, pattern=NAME)


class GateOut(BaseModel):
    id: int
    name: str
    event_id: int
    list_id: int


class NewGateOut(GateOut):
    token: str = Field(description="The gate's bearer token: shown this once, stored only as a hash")


class ListOccupancyOut(BaseModel):
    list_id: int
    name: str
    policy: str
    capacity: int | None
    inside_now: int
    entries: int
    reentries: int
    exits: int
    entries_today: int
    exits_today: int
    refusals: dict[str, int]


class OccupancyOut(BaseModel):
    event_id: int
    inside_now: int = Field(description="Tickets inside through any list, each counted once")
    entries: int
    reentries: int = Field(description="Admitted entries beyond each ticket's first")
    exits: int
    entries_today: int
    exits_today: int
    refusals: dict[str, int]
    lists: list[ListOccupancyOut]


class ConflictOut(BaseModel):
    redemption_id: int
    ticket_id: int | None
    code: str
    gate: str
    list_id: int | None
    direction: str
    scanned_at: datetime | None
    uploaded_at: datetime
    conflict: str


def _list_out(item: CheckinList) -> ListOut:
    return ListOut(
        id=item.id,
        event_id=item.event_id,
        is_default=item.is_default,
        inside_now=item.inside_now,
        name=item.name,
        policy=ListPolicy(item.policy),
        consume_at_end=item.consume_at_end,
        max_entries=item.max_entries,
        max_per_day=item.max_per_day,
        entry_after_exit_only=item.entry_after_exit_only,
        window_start=item.window_start,
        window_end=item.window_end,
        capacity=item.capacity,
        ticket_classes=item.ticket_classes,
    )


def _refused(exc: Exception) -> HTTPException:
    if isinstance(exc, lists.UnknownList):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc))
    return HTTPException(status.HTTP_409_CONFLICT, str(exc))


@router.get("/{event_id}/checkin-lists", response_model=list[ListOut], responses=NOT_FOUND)
def list_lists(event_id: int = Path(ge=1, le=2**63 - 1)) -> list[ListOut]:
    try:
        with session_scope() as session:
            return [_list_out(item) for item in lists.event_lists(session, event_id)]
    except lists.UnknownList as exc:
        raise _refused(exc) from exc


@router.post("/{event_id}/checkin-lists", response_model=ListOut, status_code=201, responses=REFUSED)
def create_list(body: ListIn, event_id: int = Path(ge=1, le=2**63 - 1)) -> ListOut:
    """A new list of the event (its default list exists already)."""
    try:
        with session_scope() as session:
            return _list_out(lists.create_list(session, event_id, body.settings()))
    except (lists.UnknownList, lists.ListError) as exc:
        raise _refused(exc) from exc


@router.put("/{event_id}/checkin-lists/{list_id}", response_model=ListOut, responses=REFUSED)
def update_list(
    body: ListIn, event_id: int = Path(ge=1, le=2**63 - 1), list_id: int = Path(ge=1, le=2**63 - 1)
) -> ListOut:
    """Replace a list's settings (recorded scans stay as they were decided)."""
    try:
        with session_scope() as session:
            return _list_out(lists.update_list(session, event_id, list_id, body.settings()))
    except (lists.UnknownList, lists.ListError) as exc:
        raise _refused(exc) from exc


@router.get("/{event_id}/gates", response_model=list[GateOut], responses=NOT_FOUND)
def list_gates(event_id: int = Path(ge=1, le=2**63 - 1)) -> list[GateOut]:
    with session_scope() as session:
        found = gates.event_gates(session, event_id)
    return [GateOut(id=g.gate_id, name=g.name, event_id=g.event_id, list_id=g.list_id) for g in found]


@router.post("/{event_id}/checkin-lists/{list_id}/gates", response_model=NewGateOut, status_code=201, responses=REFUSED)
def add_gate(
    body: GateIn, event_id: int = Path(ge=1, le=2**63 - 1), list_id: int = Path(ge=1, le=2**63 - 1)
) -> NewGateOut:
    """A gate of this list, with its own token (for the gate page, ``cardpipe gate`` and offline)."""
    try:
        with session_scope() as session:
            made = gates.add_gate(session, event_id, list_id, body.name)
    except (lists.UnknownList, lists.ListError) as exc:
        raise _refused(exc) from exc
    identity = made.identity
    return NewGateOut(
        id=identity.gate_id, name=identity.name, event_id=identity.event_id, list_id=identity.list_id, token=made.token
    )


@router.get("/{event_id}/occupancy", response_model=OccupancyOut, responses=NOT_FOUND)
def event_occupancy(event_id: int = Path(ge=1, le=2**63 - 1)) -> OccupancyOut:
    """Who is inside now, per list and for the event; entries, re-entries, exits, refusals."""
    try:
        with session_scope() as session:
            return OccupancyOut.model_validate(occupancy.event_occupancy(session, event_id), from_attributes=True)
    except lists.UnknownList as exc:
        raise _refused(exc) from exc


@router.get("/{event_id}/checkin-conflicts", response_model=list[ConflictOut], responses=NOT_FOUND)
def checkin_conflicts(event_id: int = Path(ge=1, le=2**63 - 1)) -> list[ConflictOut]:
    """Offline decisions the server would not have taken (newest first, at most 500): each scan
    is kept as what happened at the door; these are for the venue to look at."""
    with session_scope() as session:
        return [ConflictOut(**asdict(c)) for c in offline_sync.conflicts(session, event_id)]


class EndConsumeOut(BaseModel):
    consumes_queued: int = Field(description="Tickets of the list that entered and now have their card consumed")


@router.post("/{event_id}/checkin-lists/{list_id}/consume-at-end", response_model=EndConsumeOut, responses=REFUSED)
def consume_at_end(
    background: BackgroundTasks, event_id: int = Path(ge=1, le=2**63 - 1), list_id: int = Path(ge=1, le=2**63 - 1)
) -> EndConsumeOut:
    """The event is over: consume the WeChat card of every ticket that entered through this
    multi-entry list (``consume_at_end`` lists only; running it again changes nothing)."""
    try:
        with session_scope() as session:
            queued = end_of_event.consume_entered_tickets(session, event_id, list_id)
            consumes = redemption_sync.queue_consumes(session.connection(), consume_redeemed_codes.actor_name, queued)
    except (lists.UnknownList, lists.ListError) as exc:
        raise _refused(exc) from exc
    background.add_task(flush, consumes)
    return EndConsumeOut(consumes_queued=len(queued))
