"""The claim and result posts' fast path answers well-formed, authenticated calls itself and hands
everything else, body included, to the FastAPI routes, which answer as they always did."""

from __future__ import annotations

from typing import Any

import dramatiq

from tests.claims.conftest import Launch
from tests.trust.test_login_limit import jscode_calls


def test_calls_the_fast_path_declines_get_the_routes_answers(launch: Launch, broker_worker: dramatiq.Worker) -> None:
    buyer = launch.buyer()
    launch.login(buyer)
    auth = launch.auth(buyer)
    claims, result = f"{launch.api}/v1/claims", f"{launch.api}/v1/claims/result"
    order_result = f"{launch.api}/v1/orders/{buyer.order_no}/claim/result"
    ok_result = {"order_nos": [buyer.order_no], "errMsg": "addCard:fail cancel", "cardList": []}

    # No or a forged token: the route's 401, whatever the body
    assert launch.http.post(claims, json={"order_nos": [buyer.order_no]}).status_code == 401
    assert launch.http.post(result, json=ok_result, headers={"Authorization": "Bearer x.y"}).status_code == 401
    assert launch.http.post(order_result, data=b"{", headers={"Content-Type": "application/json"}).status_code == 401

    # A body that is not JSON, not valid, or of another type: the route's 422
    for url, body in ((claims, {"order_nos": []}), (result, {"order_nos": [buyer.order_no]}), (order_result, [])):
        answer = launch.http.post(url, json=body, headers=auth)
        assert answer.status_code == 422, answer.text
    assert launch.http.post(claims, data=b"{", headers={**auth, "Content-Type": "application/json"}).status_code == 422
    plain = launch.http.post(claims, data=b'{"order_nos": ["x"]}', headers={**auth, "Content-Type": "text/plain"})
    assert plain.status_code == 422

    # Someone else's or no order: the route's 404, nothing stored
    unknown: list[tuple[str, dict[str, Any]]] = [
        (claims, {"order_nos": ["NOPE-1"]}),
        (result, {**ok_result, "order_nos": ["NOPE-1"]}),
    ]
    for url, payload in unknown:
        answer = launch.http.post(url, json=payload, headers=auth)
        assert (answer.status_code, answer.json()) == (404, {"detail": "no such order: NOPE-1"})

    # A well-formed call is answered by the fast path, with every header the app sets
    answer = launch.http.post(order_result, json={"errMsg": "addCard:fail cancel", "cardList": []}, headers=auth)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"duplicate": False, "resigned": True, "poll_url": f"/v1/orders/{buyer.order_no}/claim"}
    assert answer.headers["x-frame-options"] == "DENY" and answer.headers["cache-control"] == "no-store"
    claimed = launch.http.post(claims, json={"order_nos": [buyer.order_no]}, headers=auth)
    assert claimed.status_code == 200 and claimed.json()["status"] == "ready"


def test_a_refused_login_is_answered_once(launch: Launch, broker_worker: dramatiq.Worker) -> None:
    # Given a code WeChat refuses (already used)
    buyer = launch.buyer()
    code = launch.fake.login(buyer.person, launch.world.mp_appid)
    session = f"{launch.api}/v1/sessions"
    assert launch.http.post(session, json={"code": code, "appid": launch.world.mp_appid}).status_code == 200
    calls = jscode_calls(launch.fake, launch.world.mp_appid)

    # When it is used again
    answer = launch.http.post(session, json={"code": code, "appid": launch.world.mp_appid})

    # Then the login is refused as the route refuses it, after one jscode2session call
    assert answer.status_code == 401 and "errcode" in answer.json()["detail"]
    assert answer.headers["x-frame-options"] == "DENY"
    assert jscode_calls(launch.fake, launch.world.mp_appid) == calls + 1

    # And a login that is not well-formed gets the route's 422
    assert launch.http.post(session, json={"code": "", "appid": launch.world.mp_appid}).status_code == 422
