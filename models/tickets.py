"""Orders and the tickets they entitle their buyer to."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId, UTCDateTime, utcnow


class TicketState(StrEnum):
    """The ticket state machine (architecture page). Transitions are guarded UPDATEs."""

    PENDING = "pending"
    READY = "ready"
    SERVED = "served"
    CLAIMED = "claimed"
    REDEEMED = "redeemed"
    DELETED = "deleted"
    REVOKED = "revoked"


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("event_id", "order_no"),
        CheckConstraint("ticket_count >= 1", name="ticket_count_positive"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    order_no: Mapped[str] = mapped_column(String(64))
    #: The buyer's *Mini Program* openid (from jscode2session); not the OA openid.
    mp_openid: Mapped[str] = mapped_column(String(64), index=True)
    unionid: Mapped[str | None] = mapped_column(String(64))
    ticket_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        UniqueConstraint("order_id", "seq"),
        UniqueConstraint("card_id", "code"),
        CheckConstraint(
            "state IN ('pending','ready','served','claimed','redeemed','deleted','revoked')",
            name="state",
        ),
        Index("ix_tickets_event_state", "event_id", "state"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    seq: Mapped[int] = mapped_column(Integer)
    card_id: Mapped[str] = mapped_column(String(32))
    #: The custom code; NULL for deposit-mode cards until WeChat tells which code was given.
    code: Mapped[str | None] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(16), default=TicketState.PENDING)
    #: The serialized cardExt JSON string handed to wx.addCard, and what signed it.
    card_ext: Mapped[str | None] = mapped_column(Text)
    ticket_version: Mapped[int | None] = mapped_column(Integer)
    nonce: Mapped[str | None] = mapped_column(String(32))
    timestamp: Mapped[int | None] = mapped_column(Integer)
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    served_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    confirmed_by_client: Mapped[bool] = mapped_column(default=False)
    confirmed_by_wechat: Mapped[bool] = mapped_column(default=False)
    #: The holder's OA openid and unionid, learnt from user_get_card.
    oa_openid: Mapped[str | None] = mapped_column(String(64))
    unionid: Mapped[str | None] = mapped_column(String(64))
    redeemed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
