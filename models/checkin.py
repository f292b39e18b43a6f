"""Venue operations: check-in lists, the gates that scan for them, and where each ticket stands
on each list.

- A **check-in list** belongs to one event and says how its gates admit: ``single`` (the first
  entry consumes the ticket, as WeChat's ``code/consume`` does) or ``multi`` (every valid scan
  admits), the tickets it admits (every ticket of the event, or only some ticket classes),
  with optional limits, anti-passback, a time window and a capacity. Every event has
  exactly one *default* list (a partial unique index): scans from gates no list claims use it.
- A **gate** belongs to one list; its bearer token is stored only as a SHA-256 hash.
- A **presence** row per (ticket, list) holds the ticket's scan history on that list as the
  decision needs it: entries so far, entries on the current local day, and whether it is inside.
  It is only written while the ticket's row is locked, so it never races.
- ``checkin_lists.inside_now`` is exact while the list has a capacity (kept under the list's row
  lock by every entry and exit through it, recounted when a capacity is set); otherwise counts
  come from the presence rows.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from cardpipe import clock
from models.base import Base, BigId, UTCDateTime


class ListPolicy(StrEnum):
    SINGLE = "single"
    MULTI = "multi"


class Direction(StrEnum):
    ENTRY = "entry"
    EXIT = "exit"


class CheckinList(Base):
    __tablename__ = "checkin_lists"
    __table_args__ = (
        UniqueConstraint("event_id", "name"),
        Index(
            "uq_checkin_lists_default",
            "event_id",
            unique=True,
            postgresql_where=text("is_default"),
            sqlite_where=text("is_default"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    policy: Mapped[str] = mapped_column(String(8), default=ListPolicy.SINGLE)
    #: ``multi`` lists: consume the WeChat card of every ticket that entered once the event ends.
    consume_at_end: Mapped[bool] = mapped_column(Boolean, default=False)
    max_entries: Mapped[int | None] = mapped_column(Integer)
    max_per_day: Mapped[int | None] = mapped_column(Integer)
    #: Anti-passback: a ticket inside cannot enter again until it has exited.
    entry_after_exit_only: Mapped[bool] = mapped_column(Boolean, default=False)
    window_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    window_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    capacity: Mapped[int | None] = mapped_column(Integer)
    #: The ticket classes the list admits (sorted names); NULL: every ticket of the event.
    ticket_classes: Mapped[list[str] | None] = mapped_column(JSON)
    inside_now: Mapped[int] = mapped_column(Integer, default=0)
    #: HMAC key of the code hashes in this list's offline snapshots (hex).
    snapshot_key: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now, onupdate=clock.now)


class Gate(Base):
    __tablename__ = "gates"
    __table_args__ = (UniqueConstraint("event_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    list_id: Mapped[int] = mapped_column(ForeignKey("checkin_lists.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    #: SHA-256 (hex) of the gate's bearer token; the token itself is shown once, when made.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)


class Presence(Base):
    __tablename__ = "ticket_presence"
    __table_args__ = (
        Index("ix_ticket_presence_list_updated", "list_id", "updated_at"),
        Index("ix_ticket_presence_event_inside", "event_id", "inside"),
    )

    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("checkin_lists.id"), primary_key=True)
    event_id: Mapped[int] = mapped_column(BigId)
    inside: Mapped[bool] = mapped_column(Boolean, default=False)
    entries: Mapped[int] = mapped_column(Integer, default=0)
    #: The local day (``YYYY-MM-DD`` in the event's time zone) ``day_entries`` counts.
    day: Mapped[str | None] = mapped_column(String(10))
    day_entries: Mapped[int] = mapped_column(Integer, default=0)
    #: When the scan that last changed this row happened at its gate (offline scans arrive late).
    last_scan_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
