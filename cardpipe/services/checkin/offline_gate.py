"""A gate's local view while it works without the network: the server's snapshot and deltas,
with the gate's own not-yet-uploaded scans folded over them, decided by the same
:func:`rules.decide` as the server.

The state is one JSON-able dict (kept in a file by ``cardpipe gate``): the snapshot's rules, key,
hashes, states, ticket classes (of the tickets that have one) and histories as the server last
said them, and ``pending``, the gate's own scans
in the order they happened. A ticket's history is the server's plus the gate's pending admitted
scans, so a delta (the server's view, which already includes whatever the gate uploaded) never
loses or double counts a local scan: uploaded scans leave ``pending`` when the server confirms
them. No code is ever kept: only its keyed hash (and the code of a pending scan, until upload).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cardpipe.services.checkin import rules
from cardpipe.services.checkin.snapshot import HASH_CHARS, NOT_CLAIMED_CHAR, STATE_CHARS, code_hash
from models import Direction, ListPolicy, RedemptionResult, TicketState

_STATE_OF_CHAR = {char: state for state, char in STATE_CHARS.items()} | {NOT_CLAIMED_CHAR: TicketState.READY}


@dataclass(frozen=True, slots=True)
class LocalAnswer:
    result: RedemptionResult
    nonce: str

    @property
    def ok(self) -> bool:
        return self.result == RedemptionResult.OK


def from_snapshot(body: dict[str, Any]) -> dict[str, Any]:
    """A fresh local state from ``GET /v1/gate/snapshot``."""
    codes = body["codes"]
    hashes = [codes[i : i + HASH_CHARS] for i in range(0, len(codes), HASH_CHARS)]
    numbered = body.get("ticket_classes") or {"names": [], "of": [0] * len(hashes)}
    names = [None, *numbered["names"]]
    return {
        "list": body["list"],
        "key": body["hash"]["key"],
        "cursor": body["cursor"],
        "inside_now": body["inside_now"],
        "states": dict(zip(hashes, body["states"], strict=True)),
        "classes": {hashed: names[number] for hashed, number in zip(hashes, numbered["of"], strict=True) if number},
        "history": body["history"],
        "pending": [],
    }


def apply_deltas(state: dict[str, Any], body: dict[str, Any]) -> None:
    """Fold ``GET /v1/gate/deltas`` into the local state."""
    state["list"] = body["list"]
    state["cursor"] = body["cursor"]
    state["inside_now"] = body["inside_now"]
    state["states"].update(body["states"])
    state.setdefault("classes", {}).update(body.get("classes", {}))
    state["history"].update(body["history"])


def rules_of(state: dict[str, Any]) -> rules.Rules:
    raw = state["list"]

    def when(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    return rules.Rules(
        policy=ListPolicy(raw["policy"]),
        max_entries=raw["max_entries"],
        max_per_day=raw["max_per_day"],
        entry_after_exit_only=raw["entry_after_exit_only"],
        window_start=when(raw["window_start"]),
        window_end=when(raw["window_end"]),
        capacity=raw["capacity"],
        timezone=raw["timezone"],
        ticket_classes=None if raw.get("ticket_classes") is None else frozenset(raw["ticket_classes"]),
    )


def _server_history(state: dict[str, Any], hashed: str) -> rules.History:
    raw = state["history"].get(hashed)
    return rules.History(*raw) if raw else rules.History()


def _view(state: dict[str, Any], hashed: str, list_rules: rules.Rules) -> tuple[str, rules.History, int]:
    """The ticket's state and history, and inside-now, with the pending scans folded in (each
    over its own ticket's history, so a re-entry without exit does not count twice)."""
    histories: dict[str, rules.History] = {}
    ticket_state = _STATE_OF_CHAR[state["states"][hashed]]
    inside_now = state["inside_now"]
    for scan in state["pending"]:
        if scan["result"] != RedemptionResult.OK:
            continue
        direction = Direction(scan["direction"])
        before = histories.get(scan["hash"]) or _server_history(state, scan["hash"])
        histories[scan["hash"]] = rules.after(list_rules, before, direction, datetime.fromisoformat(scan["scanned_at"]))
        inside_now += rules.inside_change(before, histories[scan["hash"]])
        if scan["hash"] == hashed and list_rules.policy == ListPolicy.SINGLE and direction == Direction.ENTRY:
            ticket_state = TicketState.REDEEMED
    history = histories.get(hashed) or _server_history(state, hashed)
    return ticket_state, history, max(inside_now, 0)


def scan(state: dict[str, Any], code: str, direction: Direction, at: datetime) -> LocalAnswer:
    """Decide a scan locally and keep it for upload."""
    hashed = code_hash(state["key"], code)
    nonce = uuid.uuid4().hex
    if hashed not in state["states"]:
        result = RedemptionResult.INVALID
    else:
        list_rules = rules_of(state)
        ticket_state, history, inside_now = _view(state, hashed, list_rules)
        result = rules.decide(
            list_rules,
            ticket_state,
            history,
            direction,
            at,
            inside_now=inside_now,
            ticket_class=state.get("classes", {}).get(hashed),
        )
    state["pending"].append(
        {
            "nonce": nonce,
            "code": code,
            "hash": hashed,
            "direction": direction,
            "scanned_at": at.isoformat(),
            "result": result,
        }
    )
    return LocalAnswer(result, nonce)


def upload_batches(state: dict[str, Any], size: int) -> list[list[dict[str, Any]]]:
    """The pending scans as upload bodies' ``scans`` lists (without the local-only hash)."""
    scans = [{k: v for k, v in scan.items() if k != "hash"} for scan in state["pending"]]
    return [scans[i : i + size] for i in range(0, len(scans), size)]


def confirm(state: dict[str, Any], nonces: set[str]) -> None:
    """The server recorded these (or had them already): they leave ``pending``."""
    state["pending"] = [scan for scan in state["pending"] if scan["nonce"] not in nonces]
