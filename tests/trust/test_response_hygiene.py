"""Every answer carries the security headers and no ``Server`` banner; codes, tokens and
sessions are never cacheable; ``/docs`` comes from the installed package's assets; an
unauthenticated malformed request is a 401, not a 422."""

from __future__ import annotations

import pytest
import requests

from tests.claims.conftest import Launch
from tests.conftest import ADMIN_TOKEN

HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def assert_hygienic(answer: requests.Response) -> None:
    for name, value in HEADERS.items():
        assert answer.headers.get(name) == value, (answer.url, name)
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert "server" not in answer.headers


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/healthz"),
        ("GET", "/openapi.json"),
        ("GET", "/ops"),
        ("GET", "/docs"),
        ("GET", "/gate"),
        ("GET", "/gate/sw.js"),
        ("GET", "/v1/orders/NO-1/claim"),  # the poll's fast path
        ("GET", "/no/such/path"),
        ("POST", "/v1/sessions"),
    ],
)
def test_every_answer_carries_the_security_headers(launch: Launch, method: str, path: str) -> None:
    assert_hygienic(requests.request(method, launch.api + path, timeout=10))


def test_sessions_codes_and_payloads_are_not_stored_by_caches(launch: Launch) -> None:
    buyer = launch.buyer()
    launch.login(buyer)
    code = launch.fake.login(buyer.person, launch.world.mp_appid)
    session = requests.post(
        f"{launch.api}/v1/sessions", json={"code": code, "appid": launch.world.mp_appid}, timeout=10
    )
    poll = launch.poll(buyer)
    cards = requests.get(f"{launch.api}/v1/orders/{buyer.order_no}/cards", headers=launch.auth(buyer), timeout=10)
    for answer in (session, poll, cards):
        assert answer.status_code == 200, answer.text
        assert "no-store" in answer.headers["cache-control"]


def test_the_html_pages_allow_only_their_own_code(launch: Launch) -> None:
    def script_src(path: str) -> list[str]:
        csp = requests.get(launch.api + path, timeout=10).headers["content-security-policy"]
        return next(part for part in csp.split(";") if part.strip().startswith("script-src")).split()

    # /ops has no inline script at all: its scripts are package files of this origin
    assert script_src("/ops") == ["script-src", "'self'"]
    assert script_src("/gate") == ["script-src", "'self'"]
    docs = script_src("/docs")
    assert any(source.startswith("'sha256-") for source in docs) and "'unsafe-inline'" not in docs
    assert not any("http" in source for source in docs)


def test_the_gate_service_worker_may_fetch_only_from_this_origin(launch: Launch) -> None:
    # a worker runs under its own script's CSP: without connect-src it could not cache the page
    csp = requests.get(f"{launch.api}/gate/sw.js", timeout=10).headers["content-security-policy"]
    directives = {part.split()[0]: part.split()[1:] for part in csp.split(";") if part.strip()}
    assert directives["default-src"] == ["'none'"] and directives["connect-src"] == ["'self'"]


def test_the_docs_use_the_packages_assets_not_a_cdn(launch: Launch) -> None:
    page = requests.get(f"{launch.api}/docs", timeout=10).text
    assert "cdn." not in page and "/docs/assets/swagger-ui-bundle.js" in page
    bundle = requests.get(f"{launch.api}/docs/assets/swagger-ui-bundle.js", timeout=10)
    assert bundle.status_code == 200 and "SwaggerUIBundle" in bundle.text[:2000]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/admin/official-accounts/wxabcdef123", b"{not json"),
        ("POST", "/v1/admin/events", b'{"name": 5}'),
        ("POST", "/v1/redemptions", b"[]"),
        ("POST", "/v1/claims", b"{"),
        ("POST", "/v1/orders/NO-1/claim/result", b'{"errMsg": 1}'),
    ],
)
def test_authentication_comes_before_body_validation(launch: Launch, method: str, path: str, body: bytes) -> None:
    url = launch.api + path
    anonymous = requests.request(method, url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
    wrong = requests.request(
        method, url, data=body, headers={"Content-Type": "application/json", "Authorization": "Bearer nope"}, timeout=10
    )
    assert anonymous.status_code == 401, anonymous.text
    assert wrong.status_code in (401, 403), wrong.text
    if path.startswith("/v1/admin"):  # a valid token gets the validation error
        admin = requests.request(
            method,
            url,
            data=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        )
        assert admin.status_code == 422 and isinstance(admin.json()["detail"], list)
