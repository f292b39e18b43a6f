"""The decision at the door: one pure function, used by the online gate (under the ticket's row
lock) and by the offline gate (on its snapshot), so both decide alike.

Inputs are plain values: the list's rules, the ticket's state and class, its history on the list
(entries so far, entries on the current local day, inside or not), the scan's direction and
time, and — when the list has a capacity — how many are inside through it. The answer is an
enumerated :class:`~models.RedemptionResult`; :func:`after` gives the history once an admitted
scan has happened. Nothing here reads a clock, a database or the network.

The order of the checks is the order a venue expects to hear the reason in: what is wrong with
the ticket itself first (revoked, deleted, never claimed), then whether the list admits its class
at all (a ticket not on the list is refused at the list's gates both ways: ``not_on_list``), then
the list's rules.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache
from zoneinfo import ZoneInfo

from models import Direction, ListPolicy, RedemptionResult, TicketState

#: What a ticket that is not in its holder's hands answers, whatever the list.
_REFUSED_STATE = {
    TicketState.REVOKED: RedemptionResult.REVOKED,
    TicketState.DELETED: RedemptionResult.DELETED,
}
#: States in which a ticket can be presented at a gate.
_PRESENTABLE = frozenset({TicketState.CLAIMED, TicketState.REDEEMED})


@dataclass(frozen=True, slots=True)
class Rules:
    policy: ListPolicy = ListPolicy.SINGLE
    max_entries: int | None = None
    max_per_day: int | None = None
    entry_after_exit_only: bool = False
    window_start: datetime | None = None
    window_end: datetime | None = None
    capacity: int | None = None
    timezone: str = "Asia/Shanghai"
    #: The ticket classes admitted; None: every ticket of the event (a ticket without a class
    #: is admitted only then).
    ticket_classes: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class History:
    """A ticket's scans on one list, as the decision needs them."""

    entries: int = 0
    day: str | None = None
    day_entries: int = 0
    inside: bool = False

    def entries_on(self, day: str) -> int:
        return self.day_entries if self.day == day else 0


@cache
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_day(at: datetime, timezone: str) -> str:
    """The venue's calendar day of an instant, ``YYYY-MM-DD``."""
    return at.astimezone(zone(timezone)).date().isoformat()


def decide(
    rules: Rules,
    state: str,
    history: History,
    direction: Direction,
    at: datetime,
    *,
    inside_now: int | None = None,
    ticket_class: str | None = None,
) -> RedemptionResult:
    """Admit (``ok``) or refuse, with the reason. ``state`` is the ticket's state; for a
    ``single`` list a ``redeemed`` ticket has had its one entry."""
    refused = _REFUSED_STATE.get(TicketState(state))
    if refused is not None:
        return refused
    if state not in _PRESENTABLE:
        return RedemptionResult.NOT_CLAIMED
    if rules.ticket_classes is not None and ticket_class not in rules.ticket_classes:
        return RedemptionResult.NOT_ON_LIST
    if direction == Direction.EXIT:
        return RedemptionResult.OK if history.inside else RedemptionResult.NOT_INSIDE
    if (rules.window_start is not None and at < rules.window_start) or (
        rules.window_end is not None and at > rules.window_end
    ):
        return RedemptionResult.OUTSIDE_WINDOW
    if rules.policy == ListPolicy.SINGLE and (state == TicketState.REDEEMED or history.entries):
        return RedemptionResult.ALREADY_REDEEMED
    if rules.entry_after_exit_only and history.inside:
        return RedemptionResult.ALREADY_INSIDE
    if rules.max_entries is not None and history.entries >= rules.max_entries:
        return RedemptionResult.LIMIT_REACHED
    if rules.max_per_day is not None and history.entries_on(local_day(at, rules.timezone)) >= rules.max_per_day:
        return RedemptionResult.DAY_LIMIT_REACHED
    if rules.capacity is not None and not history.inside and (inside_now or 0) >= rules.capacity:
        return RedemptionResult.CAPACITY_FULL
    return RedemptionResult.OK


def after(rules: Rules, history: History, direction: Direction, at: datetime) -> History:
    """The history once an admitted scan has happened."""
    if direction == Direction.EXIT:
        return replace(history, inside=False)
    day = local_day(at, rules.timezone)
    return History(
        entries=history.entries + 1,
        day=day,
        day_entries=history.entries_on(day) + 1,
        inside=True,
    )


def inside_change(before: History, now: History) -> int:
    """+1 when the scan took the ticket in, -1 when it took it out, else 0 (capacity counters)."""
    return int(now.inside) - int(before.inside)
