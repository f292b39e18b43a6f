"""Gate redemptions (one row per client nonce, so a retried scan changes nothing) and ticket
revocations, each with where its WeChat side (``code/consume``, ``code/unavailable``) stands."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from cardpipe import clock
from models.base import Base, BigId, UTCDateTime


class RedemptionResult(StrEnum):
    OK = "ok"
    INVALID = "invalid"
    NOT_CLAIMED = "not_claimed"
    ALREADY_REDEEMED = "already_redeemed"
    REVOKED = "revoked"
    DELETED = "deleted"
    WRONG_EVENT = "wrong_event"
    OUTSIDE_WINDOW = "outside_window"
    LIMIT_REACHED = "limit_reached"
    DAY_LIMIT_REACHED = "day_limit_reached"
    ALREADY_INSIDE = "already_inside"
    NOT_INSIDE = "not_inside"
    CAPACITY_FULL = "capacity_full"
    NOT_ON_LIST = "not_on_list"


class ConsumeSync(StrEnum):
    """Where the WeChat side of a redemption (``code/consume``) or a revocation
    (``code/unavailable``) stands."""

    NOT_NEEDED = "not_needed"
    PENDING = "pending"
    DONE = "done"
    #: WeChat and we disagree about the code (consumed elsewhere, deleted, unknown…): ops look at it.
    DISAGREES = "disagrees"


class Redemption(Base):
    __tablename__ = "redemptions"
    __table_args__ = (
        Index("ix_redemptions_consume_sync", "consume_sync"),
        #: The ops sampler counts redemptions per minute.
        Index("ix_redemptions_created_at", "created_at"),
        Index("ix_redemptions_event_gate_result", "event_id", "gate", "result"),
        #: A single-use ticket lets one person in: at most one ``ok`` entry per ticket decided
        #: here, whatever the race. Entries decided by offline gates are what happened at the door
        #: and are kept even when they conflict (``conflict`` says with what).
        Index(
            "uq_redemptions_single_entry",
            "ticket_id",
            unique=True,
            postgresql_where=text("result = 'ok' AND direction = 'entry' AND single_use AND NOT offline"),
            sqlite_where=text("result = 'ok' AND direction = 'entry' AND single_use AND NOT offline"),
        ),
        Index("ix_redemptions_list_result", "list_id", "result"),
        Index("ix_redemptions_ticket", "ticket_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), unique=True)
    code: Mapped[str] = mapped_column(String(32))
    card_id: Mapped[str | None] = mapped_column(String(32))
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id"))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    gate: Mapped[str] = mapped_column(String(64))
    result: Mapped[str] = mapped_column(String(24))
    detail: Mapped[str | None] = mapped_column(Text)
    #: The check-in list that decided the scan (NULL: WeChat's own consumes).
    list_id: Mapped[int | None] = mapped_column(ForeignKey("checkin_lists.id"))
    direction: Mapped[str] = mapped_column(String(8), default="entry", server_default="entry")
    #: The deciding list was ``single``: an ``ok`` entry consumed the ticket.
    single_use: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    #: Decided by a gate without the network and uploaded later; ``scanned_at`` is its time.
    offline: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    scanned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: An offline decision the server would not have taken (the same single-use ticket let in
    #: at another gate, a revoked ticket…): what it conflicts with.
    conflict: Mapped[str | None] = mapped_column(Text)
    consume_sync: Mapped[str] = mapped_column(String(16), default=ConsumeSync.NOT_NEEDED)
    #: ``code/consume`` calls sent to WeChat.
    consume_attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: ``code/consume`` calls sent whose outcome we never learnt (timeout, crash): if WeChat later
    #: says the code is consumed, one of them did it, and that is success, not a disagreement.
    consume_in_doubt: Mapped[int] = mapped_column(Integer, default=0)
    #: When a worker last looked at the pending consume (the resync sweep skips live ones).
    sync_attempted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)


class Revocation(Base):
    """An admin took a ticket back; ``wechat_sync`` tracks the queued ``code/unavailable``."""

    __tablename__ = "revocations"
    __table_args__ = (Index("ix_revocations_wechat_sync", "wechat_sync"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), unique=True)
    reason: Mapped[str] = mapped_column(String(64), default="")
    #: The ticket's state when it was revoked (a ``ready`` ticket never reached WeChat).
    previous_state: Mapped[str] = mapped_column(String(16))
    wechat_sync: Mapped[str] = mapped_column(String(16), default=ConsumeSync.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sync_attempted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    synced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    detail: Mapped[str | None] = mapped_column(Text)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
