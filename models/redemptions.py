"""Gate redemptions: one row per client nonce, so a retried scan changes nothing."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId, UTCDateTime, utcnow


class RedemptionResult(StrEnum):
    OK = "ok"
    INVALID = "invalid"
    NOT_CLAIMED = "not_claimed"
    ALREADY_REDEEMED = "already_redeemed"
    REVOKED = "revoked"
    DELETED = "deleted"
    WRONG_EVENT = "wrong_event"


class ConsumeSync(StrEnum):
    """Where the WeChat ``code/consume`` of an ``ok`` redemption stands."""

    NOT_NEEDED = "not_needed"
    PENDING = "pending"
    DONE = "done"
    #: WeChat already had the code consumed (40099) or otherwise disagrees: ops look at it.
    DISAGREES = "disagrees"


class Redemption(Base):
    __tablename__ = "redemptions"
    __table_args__ = (Index("ix_redemptions_consume_sync", "consume_sync"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), unique=True)
    code: Mapped[str] = mapped_column(String(32))
    card_id: Mapped[str | None] = mapped_column(String(32))
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id"))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    gate: Mapped[str] = mapped_column(String(64))
    result: Mapped[str] = mapped_column(String(24))
    detail: Mapped[str | None] = mapped_column(Text)
    consume_sync: Mapped[str] = mapped_column(String(16), default=ConsumeSync.NOT_NEEDED)
    consume_attempts: Mapped[int] = mapped_column(Integer, default=0)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
