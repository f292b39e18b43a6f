"""Fixtures for venue tests: the redemption tests' event (its tickets claimed in the database),
an app client, and helpers to make lists and gates through the admin API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import create_app
from tests.redemptions.conftest import ADMIN, GateEvent, gate_event, live_api, nonce, other_event  # noqa: F401
from workers.broker import broker


@pytest.fixture
def client(gate_event: GateEvent) -> Iterator[TestClient]:  # noqa: F811
    broker.flush_all()
    with TestClient(create_app()) as client:
        yield client
    broker.flush_all()


def make_list(client: TestClient, event_id: int, **settings: Any) -> dict[str, Any]:
    response = client.post(f"/v1/admin/events/{event_id}/checkin-lists", json=settings, headers=ADMIN)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def make_gate(client: TestClient, event_id: int, list_id: int, name: str) -> dict[str, str]:
    """A gate of the list; returns the headers that scan as it."""
    response = client.post(
        f"/v1/admin/events/{event_id}/checkin-lists/{list_id}/gates", json={"name": name}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def scan_as(client: TestClient, headers: dict[str, str], code: str, direction: str = "entry") -> dict[str, Any]:
    response = client.post(
        "/v1/redemptions", json={"code": code, "nonce": nonce(), "direction": direction}, headers=headers
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def occupancy(client: TestClient, event_id: int) -> dict[str, Any]:
    response = client.get(f"/v1/admin/events/{event_id}/occupancy", headers=ADMIN)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer
