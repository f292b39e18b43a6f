"""The transactional outbox: a message a transaction means to send, committed with the rows it
is about (see :mod:`cardpipe.services.outbox`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from cardpipe import clock
from models.base import Base, BigId, UTCDateTime


class OutboxMessage(Base):
    """``sent_at`` is null until the relay handed the message to the broker; the row is deleted
    once the message's work is done (or dead-lettered), so the table holds only open work."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index(
            "ix_outbox_unsent",
            "id",
            postgresql_where=text("sent_at IS NULL"),
            sqlite_where=text("sent_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    #: The dramatiq actor's name.
    actor: Mapped[str] = mapped_column(String(64))
    #: The message's positional arguments, as a JSON array.
    args: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
