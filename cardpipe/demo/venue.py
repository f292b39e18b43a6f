"""The demo's venue step: check-in lists driven through the api like a venue's staff would.

A multi-entry hall with anti-passback and a capacity: visitors enter until it is full, some
leave, the ones refused get in, some come back in (re-entries). A single-use VIP list with one
online gate and one gate that works offline (snapshot, local decisions with the same rules,
upload): tickets the offline gate let in are also let in online meanwhile, so the upload records
every scan and flags those as conflicts. The step checks each count and reports them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

from cardpipe import clock
from cardpipe.services.checkin import offline_gate
from models import Direction

HALL_CAPACITY = 40
#: Visitors of the hall: more than fit, so the capacity is reached and released.
HALL_VISITORS = 50
LEAVERS = 20
RETURNERS = 10
OFFLINE_ENTRIES = 10
#: Of the offline gate's tickets, this many are also let in online before it syncs.
DOUBLE_ADMITTED = 5


class DemoApi(Protocol):
    admin: requests.Session
    event_id: int

    def _api(self, path: str) -> str: ...


@dataclass
class VenueReport:
    counts: dict[str, Any] = field(default_factory=dict)
    offline_synced: int = 0
    conflicts: int = 0
    capacity_refusals: int = 0
    problems: list[str] = field(default_factory=list)


def _ok(response: requests.Response) -> Any:
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.method} {response.url} → {response.status_code}: {response.text[:300]}")
    return response.json()


def _gate(demo: DemoApi, list_id: int, name: str) -> requests.Session:
    made = _ok(
        demo.admin.post(
            demo._api(f"/v1/admin/events/{demo.event_id}/checkin-lists/{list_id}/gates"), json={"name": name}
        )
    )
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {made['token']}"
    return session


def _scan(demo: DemoApi, gate: requests.Session, code: str, direction: str = "entry") -> str:
    body = {"code": code, "nonce": uuid.uuid4().hex, "direction": direction}
    return str(_ok(gate.post(demo._api("/v1/redemptions"), json=body))["result"])


def run_venue(demo: DemoApi, codes: list[str]) -> VenueReport:
    """Needs ``HALL_VISITORS + OFFLINE_ENTRIES`` claimed codes nobody has scanned yet."""
    report = VenueReport()
    lists_url = demo._api(f"/v1/admin/events/{demo.event_id}/checkin-lists")
    hall = _ok(
        demo.admin.post(
            lists_url,
            json={"name": "hall", "policy": "multi", "entry_after_exit_only": True, "capacity": HALL_CAPACITY},
        )
    )
    vip = _ok(demo.admin.post(lists_url, json={"name": "vip", "policy": "single"}))
    door_in, door_out = _gate(demo, hall["id"], "hall-in"), _gate(demo, hall["id"], "hall-out")
    vip_online, vip_offline = _gate(demo, vip["id"], "vip-1"), _gate(demo, vip["id"], "vip-offline")
    visitors, vip_codes = codes[:HALL_VISITORS], codes[HALL_VISITORS : HALL_VISITORS + OFFLINE_ENTRIES]

    first = [_scan(demo, door_in, code) for code in visitors]
    report.capacity_refusals = first.count("capacity_full")
    left = [_scan(demo, door_out, code, "exit") for code in visitors[:LEAVERS]]
    refused_then = [_scan(demo, door_in, code) for code in visitors[HALL_CAPACITY:]]
    returned = [_scan(demo, door_in, code) for code in visitors[:RETURNERS]]
    expected = (
        ["ok"] * HALL_CAPACITY + ["capacity_full"] * (HALL_VISITORS - HALL_CAPACITY),
        ["ok"] * LEAVERS,
        ["ok"] * (HALL_VISITORS - HALL_CAPACITY),
        ["ok"] * RETURNERS,
    )
    if (first, left, refused_then, returned) != expected:
        report.problems.append(f"hall answers {first, left, refused_then, returned}, expected {expected}")

    state = offline_gate.from_snapshot(_ok(vip_offline.get(demo._api("/v1/gate/snapshot"))))
    local = [offline_gate.scan(state, code, Direction.ENTRY, clock.now()).result for code in vip_codes]
    if local != ["ok"] * OFFLINE_ENTRIES:
        report.problems.append(f"the offline gate answered {local}")
    for code in vip_codes[:DOUBLE_ADMITTED]:
        _scan(demo, vip_online, code)
    for batch in offline_gate.upload_batches(state, 500):
        uploaded = _ok(vip_offline.post(demo._api("/v1/gate/scans"), json={"scans": batch}))
        report.offline_synced += uploaded["recorded"]
        report.conflicts += uploaded["conflicts"]
    if (report.offline_synced, report.conflicts) != (OFFLINE_ENTRIES, DOUBLE_ADMITTED):
        report.problems.append(f"offline sync recorded {report.offline_synced} with {report.conflicts} conflicts")

    report.counts = _ok(demo.admin.get(demo._api(f"/v1/admin/events/{demo.event_id}/occupancy")))
    (hall_counts,) = [item for item in report.counts["lists"] if item["name"] == "hall"]
    want = {
        "inside_now": HALL_CAPACITY,
        "entries": HALL_VISITORS + RETURNERS,
        "reentries": RETURNERS,
        "exits": LEAVERS,
    }
    got = {key: hall_counts[key] for key in want}
    if got != want:
        report.problems.append(f"hall counts {got}, expected {want}")
    return report
