"""An event: one card (MEETING_TICKET or SCENIC_TICKET) whose tickets go to a mini program's users."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cardpipe import clock
from models.base import Base, BigId, UTCDateTime

#: Letters and digits that cannot be misread at a gate (no 0/O, 1/I/L).
UNAMBIGUOUS_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"


class CodeMode(StrEnum):
    CUSTOM = "custom"
    DEPOSIT = "deposit"


class EventState(StrEnum):
    DRAFT = "draft"
    PREISSUING = "preissuing"
    #: Every imported order has all its tickets and WeChat's stock covers them.
    ISSUED = "issued"


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint("code_length BETWEEN 6 AND 20", name="code_length"),
        CheckConstraint("code_mode IN ('custom', 'deposit')", name="code_mode"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    official_account_id: Mapped[int] = mapped_column(ForeignKey("official_accounts.id"))
    mini_program_id: Mapped[int] = mapped_column(ForeignKey("mini_programs.id"))
    card_id: Mapped[str | None] = mapped_column(String(32), unique=True)
    card_type: Mapped[str] = mapped_column(String(32), default="MEETING_TICKET")
    #: WeChat's audit state of the card (CARD_STATUS_*), updated by card_pass_check pushes.
    card_status: Mapped[str] = mapped_column(String(32), default="CARD_STATUS_NOT_VERIFY")
    #: CreateTime of the audit push that set ``card_status``: an older push, redelivered late,
    #: does not overwrite a newer verdict.
    card_status_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    code_mode: Mapped[str] = mapped_column(String(16), default=CodeMode.CUSTOM)
    code_length: Mapped[int] = mapped_column(Integer, default=12)
    code_alphabet: Mapped[str] = mapped_column(String(64), default=UNAMBIGUOUS_ALPHABET)
    launch_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: draft → preissuing → issued (pre-issue done); tickets carry their own states.
    state: Mapped[str] = mapped_column(String(16), default="draft")
    preissue_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Progress counters, kept exact in the transactions that change them: the order import
    #: adds to the totals, each pre-issue chunk to the issued/complete counts. They make progress
    #: a one-row read instead of a count over a million tickets.
    orders_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    tickets_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    orders_complete: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    tickets_issued: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: The card's WeChat stock as the pre-issue planner last left it, and how many of the
    #: event's tickets holders had received then: each later claim takes one unit, so the stock
    #: now is about ``wechat_stock - (received now - wechat_stock_received)`` (ops alert on it).
    wechat_stock: Mapped[int | None] = mapped_column(Integer)
    wechat_stock_received: Mapped[int | None] = mapped_column(Integer)
    wechat_stock_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: IANA time zone of the venue: "per day" limits count days here.
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai", server_default="Asia/Shanghai")
    #: Tickets WeChat's stock was last made to cover (the planner records it after raising the
    #: stock). The event reads ``issued`` only while this covers ``tickets_total``.
    stock_covered: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
