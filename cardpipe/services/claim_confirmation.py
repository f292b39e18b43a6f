"""Confirming with WeChat the claims only the client reported.

A ticket moves to ``claimed`` on the first of two signals: the client's ``wx.addCard`` result
or WeChat's ``user_get_card`` push. A push can be lost (the OA server was down for longer than
WeChat's retries), so a ticket claimed by the client and still unconfirmed by WeChat after a
delay is looked up with ``code/get``: WeChat holding the code is the same signal as the push.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from cardpipe.services import claims
from models import Event, OfficialAccount, Ticket, TicketState
from wechat.client import CodeInfo
from wechat.errors import BusinessError

log = logging.getLogger(__name__)

#: code/get's answer for a code WeChat never gave to anyone.
CODE_NOT_RECEIVED = 40056
DELETED_BY_USER = "DELETE"


class Confirmation(StrEnum):
    CONFIRMED = "confirmed"
    DELETED = "deleted"
    NOT_ON_WECHAT = "not_on_wechat"
    #: Nothing left to check (already confirmed, or no longer claimed).
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class ClientClaim:
    ticket_id: int
    order_id: int
    event_id: int
    card_id: str
    code: str


def unconfirmed_client_claims(
    session: Session, *, now: datetime, delay_s: float, max_age_s: float, limit: int
) -> dict[str, list[int]]:
    """Ticket ids per OA appid: claimed by the client between ``max_age_s`` and ``delay_s`` ago
    and never confirmed by WeChat."""
    rows = session.execute(
        select(OfficialAccount.appid, Ticket.id)
        .join(Event, Event.id == Ticket.event_id)
        .join(OfficialAccount, OfficialAccount.id == Event.official_account_id)
        .where(
            Ticket.state == TicketState.CLAIMED,
            Ticket.confirmed_by_client.is_(True),
            Ticket.confirmed_by_wechat.is_(False),
            Ticket.code.is_not(None),
            Ticket.claimed_at.between(now - timedelta(seconds=max_age_s), now - timedelta(seconds=delay_s)),
        )
        .order_by(Ticket.id)
        .limit(limit)
    )
    found: defaultdict[str, list[int]] = defaultdict(list)
    for appid, ticket_id in rows:
        found[appid].append(ticket_id)
    return dict(found)


def still_unconfirmed(session: Session, ticket_id: int) -> ClientClaim | None:
    row = session.execute(
        select(Ticket.id, Ticket.order_id, Ticket.event_id, Ticket.card_id, Ticket.code).where(
            Ticket.id == ticket_id,
            Ticket.state == TicketState.CLAIMED,
            Ticket.confirmed_by_wechat.is_(False),
            Ticket.code.is_not(None),
        )
    ).one_or_none()
    return None if row is None else ClientClaim(row.id, row.order_id, row.event_id, row.card_id, row.code)


def look_up(claim: ClientClaim, code_get: Callable[[str, str], CodeInfo]) -> CodeInfo | None:
    """WeChat's view of the claimed code, or None if WeChat never gave it out. Quota, token and
    transport errors propagate (the message is retried); so do other refusals."""
    try:
        return code_get(claim.card_id, claim.code)
    except BusinessError as exc:
        if exc.errcode == CODE_NOT_RECEIVED:
            return None
        raise


def apply(session: Session, claim: ClientClaim, info: CodeInfo | None) -> Confirmation:
    """Record WeChat's answer with the same guarded transitions as its pushes."""
    if info is None:
        log.warning("ticket %s: the client reported it claimed, but WeChat never gave out its code", claim.ticket_id)
        return Confirmation.NOT_ON_WECHAT
    if info.user_card_status == DELETED_BY_USER:
        deleted = claims.delete(session, event_id=claim.event_id, code=claim.code)
        return Confirmation.DELETED if deleted else Confirmation.SKIPPED
    outcome = claims.confirm_claim(
        session,
        ticket_id=claim.ticket_id,
        card_id=claim.card_id,
        code=claim.code,
        signal=claims.Signal.WECHAT,
        oa_openid=info.openid or None,
    )
    return Confirmation.CONFIRMED if outcome == claims.ClaimOutcome.CONFIRMED else Confirmation.SKIPPED
