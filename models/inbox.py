"""Every inbound callback and WeChat push, stored raw before it is processed."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cardpipe import clock
from models.base import Base, BigId, UTCDateTime


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
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class PushNonce(Base):
    """The (timestamp, nonce) of every push accepted within the freshness window, with a digest
    of its body: a replay of the pair with another body is refused. Kept in the database, not
    Redis, so that pushes never depend on Redis; rows older than the window are pruned."""

    __tablename__ = "push_nonces"

    official_account_id: Mapped[int] = mapped_column(ForeignKey("official_accounts.id"), primary_key=True)
    timestamp: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    body_sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now, index=True)
