"""Which event a card belongs to, as seen by the tenant a request came in for.

A push names its official account by the URL it arrives at; a card id or code in its body is
only believed if the card is the card of an event of that account. Everything else is foreign:
the caller records it and changes nothing.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Event


def event_of_card(session: Session, *, official_account_id: int | None, card_id: str) -> int | None:
    """The id of the event of ``card_id`` if that event belongs to the official account, else None."""
    if official_account_id is None or not card_id:
        return None
    return session.scalars(
        select(Event.id).where(Event.card_id == card_id, Event.official_account_id == official_account_id)
    ).one_or_none()


def foreign_card_note(card_id: str) -> str:
    return f"foreign: card {card_id!r} is not the card of an event of this official account; nothing changed"
