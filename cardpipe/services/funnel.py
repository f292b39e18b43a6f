"""An event's funnel: where its tickets stand and how fast they move."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.credentials import stats_key
from cardpipe.redis_values import as_text
from models import Event, OfficialAccount, Order, Ticket, TicketState

#: Claim rate is reported over this window.
CLAIM_RATE_WINDOW = timedelta(minutes=5)


class UnknownEvent(LookupError):
    pass


@dataclass(frozen=True)
class QuotaState:
    blocked: bool
    blocked_until: datetime | None
    reason: str | None


NOT_BLOCKED = QuotaState(False, None, None)


@dataclass(frozen=True)
class EventFunnel:
    event_id: int
    name: str
    card_id: str | None
    card_status: str
    state: str
    orders: int
    tickets_ordered: int
    tickets_by_state: dict[str, int]
    claims_per_minute: float
    wechat_counters: dict[str, int]
    quota: QuotaState
    #: WeChat refuses the account's configuration (credential work is backing off).
    config_error: str | None = None
    issued: int = field(init=False)

    def __post_init__(self) -> None:
        pending = self.tickets_by_state.get(TicketState.PENDING, 0)
        object.__setattr__(self, "issued", sum(self.tickets_by_state.values()) - pending)


def event_funnel(session: Session, redis: Redis, event_id: int, *, now: datetime | None = None) -> EventFunnel:
    event = session.get(Event, event_id)
    if event is None:
        raise UnknownEvent(f"no event {event_id}")
    now = now or clock.now()
    orders, tickets_ordered = session.execute(
        select(func.count(), func.coalesce(func.sum(Order.ticket_count), 0)).where(Order.event_id == event_id)
    ).one()
    by_state = {state: 0 for state in TicketState}
    for state, count in session.execute(
        select(Ticket.state, func.count()).where(Ticket.event_id == event_id).group_by(Ticket.state)
    ):
        by_state[TicketState(state)] = count
    recent_claims = session.scalar(
        select(func.count()).where(Ticket.event_id == event_id, Ticket.claimed_at >= now - CLAIM_RATE_WINDOW)
    )
    account = session.get(OfficialAccount, event.official_account_id)
    assert account is not None
    blocked = account.quota_blocked_until is not None and account.quota_blocked_until > now
    quota = QuotaState(blocked, account.quota_blocked_until, account.quota_reason) if blocked else NOT_BLOCKED
    counters = {as_text(k): int(float(v)) for k, v in redis.hgetall(stats_key(account.appid)).items()}
    return EventFunnel(
        event_id=event.id,
        name=event.name,
        card_id=event.card_id,
        card_status=event.card_status,
        state=event.state,
        orders=orders,
        tickets_ordered=int(tickets_ordered),
        tickets_by_state={str(k): v for k, v in by_state.items()},
        claims_per_minute=round((recent_claims or 0) / (CLAIM_RATE_WINDOW.total_seconds() / 60), 2),
        wechat_counters=counters,
        quota=quota,
        config_error=account.config_error,
    )


def all_event_ids(session: Session) -> list[int]:
    return list(session.scalars(select(Event.id).order_by(Event.id)))
