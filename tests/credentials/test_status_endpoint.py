"""``GET /v1/admin/official-accounts/{appid}/status``: admin only, 404 for an unknown account,
versions and expiries but never a token or ticket value."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api import create_app
from cardpipe.runtime import credential_store
from tests.conftest import ADMIN_TOKEN
from tests.credentials.conftest import Shop

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_the_status_of_an_account_without_secrets(shop: Shop) -> None:
    store = credential_store()
    token, ticket = store.access_token(shop.appid), store.card_ticket(shop.appid)
    client = TestClient(create_app())
    response = client.get(f"/v1/admin/official-accounts/{shop.appid}/status", headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["access_token"]["version"] == 1 and 7000 < body["access_token"]["expires_in_s"] <= 7200
    assert body["card_ticket"]["version"] == ticket.version
    assert body["quota"] == {
        "blocked": False,
        "blocked_until": None,
        "reason": None,
        "next_probe_in_s": None,
        "minute_pause_s": None,
    }
    assert body["counters"]["token_fetches"] == 1 and body["counters"]["calls"] >= 2
    assert token not in response.text and ticket.value not in response.text


def test_unknown_accounts_and_missing_tokens_are_refused(shop: Shop) -> None:
    client = TestClient(create_app())
    assert client.get(f"/v1/admin/official-accounts/{shop.appid}/status").status_code == 401
    unknown = client.get("/v1/admin/official-accounts/wxnosuchaccount/status", headers=ADMIN)
    assert unknown.status_code == 404 and "no official account" in unknown.json()["detail"]
