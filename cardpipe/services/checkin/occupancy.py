"""Who is inside, per list and per event, and what the gates did today.

"Inside now" is counted from presence rows, one per (ticket, list): a ticket inside counts once
per list and once per event (``COUNT(DISTINCT ticket_id)``) whatever gates it used, so two gates
or two lists sharing tickets never double count. Entries, exits and refusals come from the scan
log (``redemptions``): "today" is the venue's local day (the event's time zone), and an offline
scan counts at the time its gate scanned it. Re-entries are admitted entries beyond each
ticket's first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.services.checkin.lists import UnknownList, event_lists
from cardpipe.services.checkin.rules import zone
from models import CheckinList, Direction, Event, Presence, Redemption, RedemptionResult


@dataclass(slots=True)
class ListOccupancy:
    list_id: int
    name: str
    policy: str
    capacity: int | None
    inside_now: int = 0
    entries: int = 0
    reentries: int = 0
    exits: int = 0
    entries_today: int = 0
    exits_today: int = 0
    refusals: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class EventOccupancy:
    event_id: int
    #: Tickets inside through any list, each counted once.
    inside_now: int
    entries: int
    reentries: int
    exits: int
    entries_today: int
    exits_today: int
    refusals: dict[str, int]
    lists: list[ListOccupancy]


def local_midnight(now: datetime, timezone: str) -> datetime:
    local = now.astimezone(zone(timezone))
    return datetime.combine(local.date(), time(), tzinfo=local.tzinfo).astimezone(UTC)


def event_occupancy(session: Session, event_id: int, *, now: datetime | None = None) -> EventOccupancy:
    event = session.get(Event, event_id)
    if event is None:
        raise UnknownList(f"no event {event_id}")
    since = local_midnight(now or clock.now(), event.timezone)
    lists = {
        item.id: ListOccupancy(item.id, item.name, item.policy, item.capacity)
        for item in event_lists(session, event_id)
    }
    for presence_list, present in session.execute(
        select(Presence.list_id, func.count())
        .where(Presence.event_id == event_id, Presence.inside)
        .group_by(Presence.list_id)
    ):
        lists[presence_list].inside_now = present
    scanned_at = func.coalesce(Redemption.scanned_at, Redemption.created_at)
    ok = Redemption.result == RedemptionResult.OK
    for list_id, direction, total, today, tickets in session.execute(
        select(
            Redemption.list_id,
            Redemption.direction,
            func.count(),
            func.count().filter(scanned_at >= since),
            func.count(distinct(Redemption.ticket_id)),
        )
        .where(Redemption.event_id == event_id, Redemption.list_id.is_not(None), ok)
        .group_by(Redemption.list_id, Redemption.direction)
    ):
        if list_id is None:  # excluded by the WHERE: the checker cannot see it
            continue
        counts = lists[list_id]
        if direction == Direction.ENTRY:
            counts.entries, counts.entries_today, counts.reentries = total, today, total - tickets
        else:
            counts.exits, counts.exits_today = total, today
    for list_id, result, count in session.execute(
        select(Redemption.list_id, Redemption.result, func.count())
        .where(Redemption.event_id == event_id, Redemption.list_id.is_not(None), ~ok)
        .group_by(Redemption.list_id, Redemption.result)
    ):
        if list_id is not None:  # excluded by the WHERE: the checker cannot see it
            lists[list_id].refusals[result] = count
    inside = session.scalar(
        select(func.count(distinct(Presence.ticket_id))).where(Presence.event_id == event_id, Presence.inside)
    )
    refusals: dict[str, int] = {}
    for counts in lists.values():
        for result, count in counts.refusals.items():
            refusals[result] = refusals.get(result, 0) + count
    return EventOccupancy(
        event_id=event_id,
        inside_now=inside or 0,
        entries=sum(c.entries for c in lists.values()),
        reentries=sum(c.reentries for c in lists.values()),
        exits=sum(c.exits for c in lists.values()),
        entries_today=sum(c.entries_today for c in lists.values()),
        exits_today=sum(c.exits_today for c in lists.values()),
        refusals=refusals,
        lists=list(lists.values()),
    )


@dataclass(frozen=True, slots=True)
class InsideGauge:
    event_id: int
    list_id: int | None
    list_name: str | None
    inside_now: int


def inside_everywhere(session: Session) -> list[InsideGauge]:
    """Inside now for every list (``list_id`` set) and every event (``list_id`` None), for
    ``/metrics``: two grouped counts over the inside presence rows."""
    gauges = [
        InsideGauge(event_id, list_id, name, inside)
        for event_id, list_id, name, inside in session.execute(
            select(CheckinList.event_id, CheckinList.id, CheckinList.name, func.count(Presence.ticket_id))
            .outerjoin(Presence, (Presence.list_id == CheckinList.id) & Presence.inside)
            .group_by(CheckinList.event_id, CheckinList.id, CheckinList.name)
        )
    ]
    events = dict(
        session.execute(
            select(Presence.event_id, func.count(distinct(Presence.ticket_id)))
            .where(Presence.inside)
            .group_by(Presence.event_id)
        ).all()
    )
    for event_id in {gauge.event_id for gauge in gauges}:
        gauges.append(InsideGauge(event_id, None, None, events.get(event_id, 0)))
    return gauges


def scan_totals(session: Session) -> list[tuple[int, str, str, int]]:
    """(list id, direction, result, scans) over every list, for ``/metrics``."""
    return [
        (list_id, direction, result, count)
        for list_id, direction, result, count in session.execute(
            select(Redemption.list_id, Redemption.direction, Redemption.result, func.count())
            .where(Redemption.list_id.is_not(None))
            .group_by(Redemption.list_id, Redemption.direction, Redemption.result)
        )
        if list_id is not None
    ]
