"""Admin registration of accounts: auth, validation, secrets write-only and encrypted."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from api import create_app
from tests.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
OA_BODY = {"app_secret": "oa-app-secret-1", "server_token": "servertoken", "original_id": "gh_test"}


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app()) as client:
        yield client


def test_admin_token_is_required(client: TestClient) -> None:
    assert client.put("/v1/admin/official-accounts/wxoa000001", json=OA_BODY).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.put("/v1/admin/official-accounts/wxoa000001", json=OA_BODY, headers=wrong).status_code == 403


def test_register_accounts_never_returns_secrets(client: TestClient, engine: Engine) -> None:
    response = client.put("/v1/admin/official-accounts/wxoa000001", json=OA_BODY, headers=ADMIN)
    assert response.status_code == 200
    assert "oa-app-secret-1" not in response.text and "servertoken" not in response.text
    response = client.put(
        "/v1/admin/mini-programs/wxmp000001",
        json={"app_secret": "mp-app-secret-1", "official_account_appid": "wxoa000001"},
        headers=ADMIN,
    )
    assert response.status_code == 200 and "mp-app-secret-1" not in response.text
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT app_secret FROM official_accounts")).scalar_one()
    assert "oa-app-secret-1" not in stored


def test_mini_program_needs_a_known_official_account(client: TestClient) -> None:
    response = client.put(
        "/v1/admin/mini-programs/wxmp000001",
        json={"app_secret": "mp-app-secret-1", "official_account_appid": "wxnotthere"},
        headers=ADMIN,
    )
    assert response.status_code == 404
    assert "wxnotthere" in response.json()["detail"]


def test_invalid_body_is_a_422_with_reasons(client: TestClient) -> None:
    response = client.put("/v1/admin/official-accounts/wxoa000001", json={"app_secret": "x"}, headers=ADMIN)
    assert response.status_code == 422
    assert {err["loc"][-1] for err in response.json()["detail"]} >= {"app_secret", "server_token"}


def test_body_over_the_limit_is_refused_before_parsing(client: TestClient) -> None:
    response = client.put("/v1/admin/official-accounts/wxoa000001", content=b"{" + b" " * 70_000 + b"}", headers=ADMIN)
    assert response.status_code == 413
