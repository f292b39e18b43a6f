"""Every inbound callback and WeChat push, stored raw before it is processed."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, BigId, UTCDateTime, utcnow


class InboxSource(StrEnum):
    CLIENT = "client"
    WECHAT = "wechat"


class InboxItem(Base):
    """The unique ``dedupe_key`` makes a redelivered callback or push a no-op insert."""

    __tablename__ = "inbox"
    __table_args__ = (Index("ix_inbox_unprocessed", "processed_at", "received_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(48))
    dedupe_key: Mapped[str] = mapped_column(String(255), unique=True)
    official_account_id: Mapped[int | None] = mapped_column(ForeignKey("official_accounts.id"))
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
