"""The offline gate's local view alone: the snapshot, its own pending scans folded in, the same
rules as the server (no database, no network)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cardpipe.services.checkin import offline_gate
from cardpipe.services.checkin.snapshot import code_hash
from models import Direction, RedemptionResult

KEY = "ab" * 32
AT = datetime(2026, 7, 31, 2, 0, tzinfo=UTC)


def _snapshot(states: dict[str, str], **rules: Any) -> dict[str, Any]:
    listed = {
        "id": 1,
        "name": "hall",
        "policy": "multi",
        "max_entries": None,
        "max_per_day": None,
        "entry_after_exit_only": False,
        "window_start": None,
        "window_end": None,
        "capacity": None,
        "timezone": "Asia/Shanghai",
        **rules,
    }
    return {
        "list": listed,
        "hash": {"key": KEY},
        "cursor": AT.isoformat(),
        "inside_now": 1,
        "codes": "".join(code_hash(KEY, code) for code in states),
        "states": "".join(states.values()),
        "history": {},
    }


def _scan(state: dict[str, Any], code: str, direction: Direction = Direction.ENTRY) -> RedemptionResult:
    return offline_gate.scan(state, code, direction, AT).result


def test_capacity_offline_counts_each_ticket_once() -> None:
    state = offline_gate.from_snapshot(_snapshot({"AAA": "c", "BBB": "c"}, capacity=2))

    assert _scan(state, "AAA") == RedemptionResult.OK
    assert _scan(state, "AAA") == RedemptionResult.OK  # no anti-passback: still one inside
    assert _scan(state, "BBB") == RedemptionResult.CAPACITY_FULL
    assert _scan(state, "AAA", Direction.EXIT) == RedemptionResult.OK
    assert _scan(state, "BBB") == RedemptionResult.OK
    assert "AAA" not in str({k: v for k, v in state.items() if k != "pending"})


def test_single_use_offline_and_unknown_and_revoked_codes() -> None:
    state = offline_gate.from_snapshot(_snapshot({"AAA": "c", "RRR": "x", "NNN": "n"}, policy="single"))

    assert [_scan(state, code) for code in ("AAA", "AAA", "RRR", "NNN", "ZZZ")] == [
        RedemptionResult.OK,
        RedemptionResult.ALREADY_REDEEMED,
        RedemptionResult.REVOKED,
        RedemptionResult.NOT_CLAIMED,
        RedemptionResult.INVALID,
    ]
    batches = offline_gate.upload_batches(state, 2)
    assert [len(batch) for batch in batches] == [2, 2, 1] and "hash" not in batches[0][0]
    offline_gate.confirm(state, {scan["nonce"] for scan in batches[0]})
    assert len(state["pending"]) == 3


def test_deltas_replace_the_servers_view_and_keep_pending_scans() -> None:
    state = offline_gate.from_snapshot(_snapshot({"AAA": "c"}, entry_after_exit_only=True))
    assert _scan(state, "AAA") == RedemptionResult.OK

    offline_gate.apply_deltas(
        state,
        {"list": state["list"], "cursor": AT.isoformat(), "inside_now": 0, "states": {}, "history": {}},
    )

    assert _scan(state, "AAA") == RedemptionResult.ALREADY_INSIDE
    offline_gate.apply_deltas(
        state,
        {
            "list": state["list"],
            "cursor": AT.isoformat(),
            "inside_now": 0,
            "states": {code_hash(KEY, "AAA"): "x"},
            "history": {},
        },
    )
    assert _scan(state, "AAA") == RedemptionResult.REVOKED
