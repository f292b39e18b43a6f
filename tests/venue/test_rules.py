"""The decision function alone: every rule, on plain values (the online and offline gates both
call it; tests/venue/rule_vectors.json is also replayed against the gate page's script)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cardpipe.services.checkin.rules import History, Rules, after, decide, inside_change
from models import Direction, ListPolicy, RedemptionResult, TicketState

VECTORS = json.loads((Path(__file__).parent / "rule_vectors.json").read_text())
AT = datetime.fromisoformat("2026-07-31T10:00:00+08:00")
MULTI = Rules(policy=ListPolicy.MULTI)


def _rules(raw: dict[str, Any]) -> Rules:
    values = dict(raw)
    for name in ("window_start", "window_end"):
        if values.get(name):
            values[name] = datetime.fromisoformat(values[name])
    if "policy" in values:
        values["policy"] = ListPolicy(values["policy"])
    if "ticket_classes" in values:
        values["ticket_classes"] = frozenset(values["ticket_classes"])
    return Rules(**values)


@pytest.mark.parametrize("case", VECTORS, ids=[case["name"] for case in VECTORS])
def test_shared_vectors(case: dict[str, Any]) -> None:
    history = History(**case.get("history", {}))
    result = decide(
        _rules(case.get("rules", {})),
        case["state"],
        history,
        Direction(case.get("direction", "entry")),
        datetime.fromisoformat(case["at"]),
        inside_now=case.get("inside_now"),
        ticket_class=case.get("ticket_class"),
    )
    assert result == RedemptionResult(case["expect"])


def test_single_use_admits_once() -> None:
    rules = Rules()
    assert decide(rules, TicketState.CLAIMED, History(), Direction.ENTRY, AT) == RedemptionResult.OK
    entered = after(rules, History(), Direction.ENTRY, AT)
    assert decide(rules, TicketState.REDEEMED, entered, Direction.ENTRY, AT) == RedemptionResult.ALREADY_REDEEMED
    left = after(rules, entered, Direction.EXIT, AT)
    assert decide(rules, TicketState.REDEEMED, left, Direction.ENTRY, AT) == RedemptionResult.ALREADY_REDEEMED


def test_multi_use_admits_again_after_an_exit_and_counts_inside_once() -> None:
    history = History()
    for _ in range(3):
        assert decide(MULTI, TicketState.CLAIMED, history, Direction.ENTRY, AT) == RedemptionResult.OK
        entered = after(MULTI, history, Direction.ENTRY, AT)
        assert inside_change(history, entered) == 1
        assert decide(MULTI, TicketState.CLAIMED, entered, Direction.EXIT, AT) == RedemptionResult.OK
        history = after(MULTI, entered, Direction.EXIT, AT)
        assert inside_change(entered, history) == -1
    assert history.entries == 3 and not history.inside


def test_a_second_entry_without_exit_does_not_count_twice_inside() -> None:
    entered = after(MULTI, History(), Direction.ENTRY, AT)
    again = after(MULTI, entered, Direction.ENTRY, AT)
    assert inside_change(entered, again) == 0 and again.entries == 2


def test_day_limit_counts_the_venue_day_not_the_utc_day() -> None:
    rules = Rules(policy=ListPolicy.MULTI, max_per_day=1, timezone="Asia/Shanghai")
    late = datetime.fromisoformat("2026-07-31T23:30:00+08:00")
    entered = after(rules, History(), Direction.ENTRY, late)
    assert entered.day == "2026-07-31"
    # 00:30 in Shanghai is still the previous day in UTC, but a new day at the venue.
    next_morning = datetime.fromisoformat("2026-08-01T00:30:00+08:00")
    assert decide(rules, TicketState.CLAIMED, entered, Direction.ENTRY, next_morning) == RedemptionResult.OK
    assert decide(rules, TicketState.CLAIMED, entered, Direction.ENTRY, late) == RedemptionResult.DAY_LIMIT_REACHED


def test_capacity_does_not_stop_a_ticket_already_inside_or_an_exit() -> None:
    rules = Rules(policy=ListPolicy.MULTI, capacity=1)
    inside = History(entries=1, inside=True)
    assert (
        decide(rules, TicketState.CLAIMED, History(), Direction.ENTRY, AT, inside_now=1)
        == RedemptionResult.CAPACITY_FULL
    )
    assert decide(rules, TicketState.CLAIMED, inside, Direction.ENTRY, AT, inside_now=1) == RedemptionResult.OK
    assert decide(rules, TicketState.CLAIMED, inside, Direction.EXIT, AT, inside_now=1) == RedemptionResult.OK
