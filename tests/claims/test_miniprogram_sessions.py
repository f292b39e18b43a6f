"""Mini Program sessions: wx.login's code → jscode2session at the fake → a signed, expiring token
that carries the MP appid, its OA, the openid and unionid, and never the session_key."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from cardpipe.services import miniprogram_sessions
from cardpipe.services.miniprogram_sessions import InvalidSession, MpSession
from tests.claims.conftest import Launch


def login(launch: Launch, code: str, appid: str | None = None) -> tuple[int, dict[str, Any]]:
    response = launch.http.post(
        f"{launch.api}/v1/sessions", json={"code": code, "appid": appid or launch.world.mp_appid}
    )
    return response.status_code, response.json()


def test_login_returns_a_token_for_the_users_mp_identity(launch: Launch) -> None:
    person = launch.world.person
    status, body = login(launch, launch.fake.login(person, launch.world.mp_appid))

    assert status == 200, body
    assert set(body) == {"token", "expires_at", "expires_in", "openid"}
    session = miniprogram_sessions.verify_token(body["token"])
    identity = launch.fake.person(person)
    assert session.openid == identity["openids"][launch.world.mp_appid] == body["openid"]
    assert session.unionid == identity["unionid"]
    assert (session.mp_appid, session.oa_appid) == (launch.world.mp_appid, launch.world.oa_appid)
    assert 7000 < body["expires_in"] <= 7200


def test_the_session_key_never_leaves_the_server(launch: Launch) -> None:
    status, body = login(launch, launch.fake.login(launch.world.person, launch.world.mp_appid))
    payload = miniprogram_sessions._unb64(body["token"].split(".")[0]).decode()

    assert status == 200 and "session_key" not in str(body) and "session_key" not in payload
    assert set(json.loads(payload)) == {"mp", "oa", "o", "u", "exp"}


def test_a_used_or_unknown_login_code_is_refused(launch: Launch) -> None:
    code = launch.fake.login(launch.world.person, launch.world.mp_appid)
    assert login(launch, code)[0] == 200

    status, body = login(launch, code)
    assert status == 401 and "WeChat refused the login code" in body["detail"]
    status, body = login(launch, "never-issued")
    assert status == 401 and "login code" in body["detail"]


def test_an_unknown_mini_program_is_a_404_and_a_bad_body_a_422(launch: Launch) -> None:
    status, body = login(launch, "whatever", appid="wxunknown0000")
    assert status == 404 and "wxunknown0000" in body["detail"]
    response = launch.http.post(f"{launch.api}/v1/sessions", json={"code": "", "appid": "not-an-appid"})
    assert response.status_code == 422
    assert {e["loc"][-1] for e in response.json()["detail"]} == {"code", "appid"}


def test_forged_expired_and_malformed_tokens_are_refused(launch: Launch) -> None:
    good = MpSession("wxmp0000001", "wxoa0000001", "o-1", None, int(time.time()) + 60)
    token = miniprogram_sessions.issue_token(good)
    assert miniprogram_sessions.verify_token(token) == good

    payload, mac = token.split(".")
    forged = miniprogram_sessions._b64(miniprogram_sessions._unb64(payload).replace(b"o-1", b"o-2")) + "." + mac
    expired = miniprogram_sessions.issue_token(
        MpSession("wxmp0000001", "wxoa0000001", "o-1", None, int(time.time()) - 1)
    )
    for bad, reason in [(forged, "signature"), (expired, "expired"), ("x" * 2000, "malformed"), ("abc", "malformed")]:
        with pytest.raises(InvalidSession, match=reason):
            miniprogram_sessions.verify_token(bad)


def test_claim_endpoints_need_a_valid_session(launch: Launch) -> None:
    buyer = launch.buyer()
    url = f"{launch.api}/v1/orders/{buyer.order_no}/claim"
    for headers in ({}, {"Authorization": "Bearer nope.nope"}, {"Authorization": "Basic abc"}):
        calls: list[tuple[str, dict[str, Any]]] = [
            ("GET", {}),
            ("POST", {}),
            ("POST", {"json": {"errMsg": "addCard:ok"}}),
        ]
        for method, kwargs in calls:
            target = url + ("/result" if "json" in kwargs else "")
            response = launch.http.request(method, target, headers=headers, **kwargs)
            assert response.status_code == 401, (method, target, headers)
            assert response.json()["detail"]
