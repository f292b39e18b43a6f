"""Check-in lists: create, change, read; every event's default list.

Invariants: an event has exactly one default list (a partial unique index; :func:`default_list`
creates it on first use, racing writers included, so events made before lists existed or by any
other path still have one). A list's ``inside_now`` counter is exact whenever it has a capacity:
setting one recounts it under the list's row lock, which every entry and exit through the list
takes too. Changes never touch scans already recorded.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cardpipe.services.ticket_classes import check_classes
from models import CheckinList, Event, ListPolicy, Presence

DEFAULT_LIST_NAME = "default"


class ListError(ValueError):
    """A list setting the venue must change (answered 4xx)."""


class UnknownList(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class ListSettings:
    name: str
    policy: ListPolicy = ListPolicy.SINGLE
    consume_at_end: bool = False
    max_entries: int | None = None
    max_per_day: int | None = None
    entry_after_exit_only: bool = False
    window_start: datetime | None = None
    window_end: datetime | None = None
    capacity: int | None = None
    #: The ticket classes the list admits; None: every ticket of the event.
    ticket_classes: Sequence[str] | None = None

    def admitted_classes(self) -> list[str] | None:
        """The classes as stored (sorted, no repeats), or ListError."""
        if self.ticket_classes is None:
            return None
        try:
            return check_classes(self.ticket_classes)
        except ValueError as exc:
            raise ListError(str(exc)) from None

    def check(self) -> None:
        if self.window_start and self.window_end and self.window_start >= self.window_end:
            raise ListError("window_start must be before window_end")
        for name in ("max_entries", "max_per_day", "capacity"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ListError(f"{name} must be at least 1 (or absent for no limit)")
        if self.consume_at_end and self.policy != ListPolicy.MULTI:
            raise ListError("consume_at_end applies to multi lists (single lists consume at entry)")
        self.admitted_classes()


def _event(session: Session, event_id: int) -> Event:
    event = session.get(Event, event_id)
    if event is None:
        raise UnknownList(f"no event {event_id}")
    return event


def default_list(session: Session, event_id: int) -> CheckinList:
    """The event's default list, created (single-use, no limits) if it has none yet."""
    found = session.scalars(
        select(CheckinList).where(CheckinList.event_id == event_id, CheckinList.is_default)
    ).one_or_none()
    if found is not None:
        return found
    _event(session, event_id)
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(
        insert(CheckinList)
        .values({**_new_list_values(event_id, ListSettings(DEFAULT_LIST_NAME)), "is_default": True})
        .on_conflict_do_nothing()
    )
    return session.scalars(select(CheckinList).where(CheckinList.event_id == event_id, CheckinList.is_default)).one()


def _new_list_values(event_id: int, settings: ListSettings) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "name": settings.name,
        "policy": settings.policy,
        "consume_at_end": settings.consume_at_end,
        "max_entries": settings.max_entries,
        "max_per_day": settings.max_per_day,
        "entry_after_exit_only": settings.entry_after_exit_only,
        "window_start": settings.window_start,
        "window_end": settings.window_end,
        "capacity": settings.capacity,
        "ticket_classes": settings.admitted_classes(),
        "inside_now": 0,
        "snapshot_key": secrets.token_hex(32),
    }


def create_list(session: Session, event_id: int, settings: ListSettings) -> CheckinList:
    settings.check()
    _event(session, event_id)
    default_list(session, event_id)
    if session.scalar(
        select(CheckinList.id).where(CheckinList.event_id == event_id, CheckinList.name == settings.name)
    ):
        raise ListError(f"event {event_id} already has a list named {settings.name!r}")
    checkin_list = CheckinList(**_new_list_values(event_id, settings), is_default=False)
    session.add(checkin_list)
    session.flush()
    return checkin_list


def get_list(session: Session, event_id: int, list_id: int) -> CheckinList:
    """A list of this event (a list id of another event is unknown here)."""
    checkin_list = session.get(CheckinList, list_id)
    if checkin_list is None or checkin_list.event_id != event_id:
        raise UnknownList(f"event {event_id} has no list {list_id}")
    return checkin_list


def event_lists(session: Session, event_id: int) -> list[CheckinList]:
    default_list(session, event_id)
    return list(session.scalars(select(CheckinList).where(CheckinList.event_id == event_id).order_by(CheckinList.id)))


def update_list(session: Session, event_id: int, list_id: int, settings: ListSettings) -> CheckinList:
    """Replace a list's settings. Setting a capacity recounts who is inside through the list,
    under its row lock, so the counter is exact from here on."""
    settings.check()
    checkin_list = get_list(session, event_id, list_id)
    session.execute(select(CheckinList.id).where(CheckinList.id == list_id).with_for_update())
    clash = session.scalar(
        select(CheckinList.id).where(
            CheckinList.event_id == event_id, CheckinList.name == settings.name, CheckinList.id != list_id
        )
    )
    if clash is not None:
        raise ListError(f"event {event_id} already has a list named {settings.name!r}")
    inside = session.scalar(
        select(func.count()).select_from(Presence).where(Presence.list_id == list_id, Presence.inside)
    )
    session.execute(
        update(CheckinList)
        .where(CheckinList.id == list_id)
        .values(
            name=settings.name,
            policy=settings.policy,
            consume_at_end=settings.consume_at_end,
            max_entries=settings.max_entries,
            max_per_day=settings.max_per_day,
            entry_after_exit_only=settings.entry_after_exit_only,
            window_start=settings.window_start,
            window_end=settings.window_end,
            capacity=settings.capacity,
            ticket_classes=settings.admitted_classes(),
            inside_now=inside or 0,
        )
        .execution_options(synchronize_session=False)
    )
    session.refresh(checkin_list)
    return checkin_list
