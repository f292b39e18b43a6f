"""Orders and the tickets they entitle their buyer to."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from cardpipe import clock
from models.base import Base, BigId, UTCDateTime


class TicketState(StrEnum):
    """The ticket state machine (architecture page). Transitions are guarded UPDATEs."""

    PENDING = "pending"
    READY = "ready"
    SERVED = "served"
    CLAIMED = "claimed"
    REDEEMED = "redeemed"
    DELETED = "deleted"
    REVOKED = "revoked"


#: Pre-issued and not yet in a user's card package: what a claim may take and a re-sign must refresh.
CLAIMABLE_STATES = (TicketState.READY, TicketState.SERVED)
#: In (or through) a user's card package: the claim happened, whatever followed.
RECEIVED_STATES = (TicketState.CLAIMED, TicketState.REDEEMED, TicketState.DELETED, TicketState.REVOKED)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("event_id", "order_no"),
        #: The target of tickets' (order_id, event_id) foreign key.
        UniqueConstraint("id", "event_id"),
        CheckConstraint("ticket_count >= 1", name="ticket_count_positive"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    order_no: Mapped[str] = mapped_column(String(64))
    #: The buyer's *Mini Program* openid (from jscode2session); not the OA openid.
    mp_openid: Mapped[str] = mapped_column(String(64), index=True)
    unionid: Mapped[str | None] = mapped_column(String(64))
    ticket_count: Mapped[int] = mapped_column(Integer)
    #: The order's ticket class (``vip``, ``standard``…): check-in lists may admit only some.
    ticket_class: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        UniqueConstraint("order_id", "seq"),
        #: A code is unique per card. The code leads: it tells rows apart at once (every ticket of
        #: an event shares its 28-character card_id), and this one index also serves the gates,
        #: which scan a code without always knowing its card. A second index on code alone cost
        #: pre-issue about a third of its database time per ticket (bench/preissue.py).
        UniqueConstraint("code", "card_id"),
        #: One key for both parents: the ticket's event is its order's event. One foreign-key
        #: check per inserted ticket instead of two (pre-issue writes a million of them).
        ForeignKeyConstraint(["order_id", "event_id"], ["orders.id", "orders.event_id"]),
        CheckConstraint(
            "state IN ('pending','ready','served','claimed','redeemed','deleted','revoked')",
            name="state",
        ),
        Index("ix_tickets_event_state", "event_id", "state"),
        #: The ops sampler counts claims and confirmations per minute. Partial: pre-issue inserts
        #: both as NULL, so the bulk path never writes these indexes.
        Index(
            "ix_tickets_claimed_at",
            "claimed_at",
            postgresql_where=text("claimed_at IS NOT NULL"),
            sqlite_where=text("claimed_at IS NOT NULL"),
        ),
        Index(
            "ix_tickets_confirmed_at",
            "confirmed_at",
            postgresql_where=text("confirmed_at IS NOT NULL"),
            sqlite_where=text("confirmed_at IS NOT NULL"),
        ),
        #: Half of each page is left free so that re-signing every outstanding ticket after an
        #: api_ticket rotation is a HOT update (no index touched), about twice as fast.
        {"postgresql_with": {"fillfactor": 50}},
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[int] = mapped_column(BigId)
    order_id: Mapped[int] = mapped_column(BigId)
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
    #: When WeChat's push confirmed the claim (``claimed_at`` is the first signal of either kind).
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The holder's OA openid and unionid, learnt from user_get_card.
    oa_openid: Mapped[str | None] = mapped_column(String(64))
    unionid: Mapped[str | None] = mapped_column(String(64))
    redeemed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now, onupdate=clock.now)
