"""WeChat's audit verdict on an event's card (``card_pass_check`` / ``card_not_pass_check``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from cardpipe.db import rowcount
from models import Event

VERIFY_OK = "CARD_STATUS_VERIFY_OK"
VERIFY_FAIL = "CARD_STATUS_VERIFY_FAIL"


def record_verdict(session: Session, *, event_id: int, status: str, at: datetime) -> bool:
    """Set the card's status unless a later verdict is already recorded (a card is audited again
    after an edit, and pushes are redelivered for up to a day). True if an event changed."""
    result = session.execute(
        update(Event)
        .where(Event.id == event_id, or_(Event.card_status_at.is_(None), Event.card_status_at <= at))
        .values(card_status=status, card_status_at=at)
        .execution_options(synchronize_session=False)
    )
    return bool(rowcount(result))
