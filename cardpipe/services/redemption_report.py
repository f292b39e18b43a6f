"""What ops see of an event's redemptions: scans by gate and reason, where the WeChat side of
consumes and revocations stands, and every disagreement between WeChat and us."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import ConsumeSync, Event, Redemption, RedemptionResult, Revocation, Ticket


@dataclass(frozen=True, slots=True)
class Disagreement:
    kind: str
    ticket_id: int | None
    code: str
    gate: str | None
    detail: str
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class EventRedemptions:
    event_id: int
    by_gate: dict[str, dict[str, int]]
    consume_sync: dict[str, int]
    revocation_sync: dict[str, int]
    disagreements: list[Disagreement]

    def by_result(self) -> dict[str, int]:
        totals = dict.fromkeys(RedemptionResult, 0)
        for counts in self.by_gate.values():
            for result, count in counts.items():
                totals[RedemptionResult(result)] += count
        return {str(result): count for result, count in totals.items()}


def event_redemptions(session: Session, event_id: int, *, disagreement_limit: int = 100) -> EventRedemptions:
    if session.get(Event, event_id) is None:
        raise LookupError(f"no event {event_id}")
    by_gate: dict[str, dict[str, int]] = {}
    for gate, result, count in session.execute(
        select(Redemption.gate, Redemption.result, func.count())
        .where(Redemption.event_id == event_id)
        .group_by(Redemption.gate, Redemption.result)
    ):
        by_gate.setdefault(gate, {})[result] = count
    consume_sync = dict(
        session.execute(
            select(Redemption.consume_sync, func.count())
            .where(Redemption.event_id == event_id, Redemption.consume_sync != ConsumeSync.NOT_NEEDED)
            .group_by(Redemption.consume_sync)
        ).all()
    )
    revocation_sync = dict(
        session.execute(
            select(Revocation.wechat_sync, func.count())
            .join(Ticket, Ticket.id == Revocation.ticket_id)
            .where(Ticket.event_id == event_id)
            .group_by(Revocation.wechat_sync)
        ).all()
    )
    disagreements = _disagreements(session, event_id, disagreement_limit)
    return EventRedemptions(event_id, by_gate, consume_sync, revocation_sync, disagreements)


def _disagreements(session: Session, event_id: int, limit: int) -> list[Disagreement]:
    consumes = session.execute(
        select(Redemption.ticket_id, Redemption.code, Redemption.gate, Redemption.detail, Redemption.created_at)
        .where(Redemption.event_id == event_id, Redemption.consume_sync == ConsumeSync.DISAGREES)
        .order_by(Redemption.id.desc())
        .limit(limit)
    ).all()
    revocations = session.execute(
        select(Revocation.ticket_id, Ticket.code, Revocation.detail, Revocation.requested_at)
        .join(Ticket, Ticket.id == Revocation.ticket_id)
        .where(Ticket.event_id == event_id, Revocation.wechat_sync == ConsumeSync.DISAGREES)
        .order_by(Revocation.id.desc())
        .limit(limit)
    ).all()
    found = [Disagreement("consume", r.ticket_id, r.code, r.gate, r.detail or "", r.created_at) for r in consumes]
    found += [
        Disagreement("revocation", r.ticket_id, r.code or "", None, r.detail or "", r.requested_at) for r in revocations
    ]
    return sorted(found, key=lambda d: d.recorded_at, reverse=True)[:limit]
