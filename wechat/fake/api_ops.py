"""The WeChat API endpoints of the fake: one function per endpoint, from a parsed ``Call`` to an
``Outcome`` (or an ``ApiError``), and the route table the HTTP layer serves.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from wechat.fake.card_spec import parse_card
from wechat.fake.cards import CONSUMED, NORMAL, UNAVAILABLE, Card
from wechat.fake.errcodes import ApiError, ok
from wechat.fake.state import TICKET_TYPES, FakePlatform, Outcome
from wechat.pushes import UserConsumeCard

CLEAR_QUOTA_PER_MONTH = 10


@dataclass(frozen=True)
class Call:
    query: Mapping[str, str]
    raw_body: bytes
    #: The caller's address as WeChat sees it (checked against the OA's IP whitelist).
    client_ip: str = "127.0.0.1"

    @property
    def access_token(self) -> str | None:
        return self.query.get("access_token")

    def json(self) -> dict[str, Any]:
        try:
            body = json.loads(self.raw_body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ApiError(47001) from None
        if not isinstance(body, dict):
            raise ApiError(47001)
        return body


def _int_field(body: Mapping[str, Any], name: str) -> int:
    value = body.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ApiError(40097, f"{name} must be a non-negative integer")
    return value


def _check_client_credential(grant_type: object) -> None:
    if grant_type != "client_credential":
        raise ApiError(40002)


def _check_secret(p: FakePlatform, appid: object, secret: object, client_ip: str) -> str:
    """40013 unknown appid, then 40164 for a caller outside an OA's IP whitelist, then 40001."""
    if not appid or not isinstance(appid, str) or p.registry.secret_of(appid) is None:
        raise ApiError(40013)
    oa = p.registry.oas.get(appid)
    if oa is not None:
        oa.check_caller_ip(client_ip)
    if p.registry.secret_of(appid) != secret:
        raise ApiError(40001, "AppSecret error")
    return appid


def token(p: FakePlatform, call: Call) -> Outcome:
    with p.lock:
        _check_client_credential(call.query.get("grant_type"))
        appid = _check_secret(p, call.query.get("appid"), call.query.get("secret"), call.client_ip)
        p.quotas.charge(appid, "/cgi-bin/token", p.now())
        issued = p.tokens.issue(appid, p.now())
        return Outcome({"access_token": issued.value, "expires_in": int(p.config.token_ttl_s)})


def stable_token(p: FakePlatform, call: Call) -> Outcome:
    body = call.json()
    with p.lock:
        _check_client_credential(body.get("grant_type"))
        appid = _check_secret(p, body.get("appid"), body.get("secret"), call.client_ip)
        force = body.get("force_refresh") in (True, "true", 1)
        p.quotas.charge(appid, "/cgi-bin/stable_token", p.now())
        if force:
            p.quotas.charge(appid, "/cgi-bin/stable_token#force", p.now())
        issued = p.tokens.stable(appid, p.now(), force=force)
        return Outcome({"access_token": issued.value, "expires_in": issued.remaining(p.now())})


def getticket(p: FakePlatform, call: Call) -> Outcome:
    with p.lock:
        oa = p.authorize(call.access_token, "/cgi-bin/ticket/getticket")
        kind = call.query.get("type")
        if kind not in TICKET_TYPES:
            raise ApiError(40097, "type")
        if kind == "wx_card":
            p.require_card_feature(oa)
        ticket = p.tickets[kind].get(oa.appid, p.now())
        return Outcome(ok(ticket=ticket.value, expires_in=ticket.remaining(p.now())))


def clear_quota(p: FakePlatform, call: Call) -> Outcome:
    body = call.json()
    with p.lock:
        oa = p.authorize(call.access_token, "/cgi-bin/clear_quota")
        if body.get("appid") != oa.appid:
            raise ApiError(40013)
        month = (oa.appid, str(int(p.now() // (30 * 86_400))))
        if p.clear_quota_uses.get(month, 0) >= CLEAR_QUOTA_PER_MONTH:
            raise ApiError(48006)
        p.clear_quota_uses[month] = p.clear_quota_uses.get(month, 0) + 1
        p.quotas.reset(oa.appid)
        return Outcome(ok())


def card_create(p: FakePlatform, call: Call) -> Outcome:
    body = call.json()
    with p.lock:
        oa = p.authorize(call.access_token, "/card/create")
        spec = parse_card(body)
        if spec.use_custom_code and not oa.settings.custom_code:
            raise ApiError(43009)
        card = p.cards.create(oa.appid, spec)
        return Outcome(ok(card_id=card.card_id))


def _card_call(p: FakePlatform, call: Call, endpoint: str) -> tuple[Card, dict[str, Any]]:
    body = call.json()
    oa = p.authorize(call.access_token, endpoint)
    return p.cards.card_of(oa.appid, body.get("card_id")), body


def card_get(p: FakePlatform, call: Call) -> Outcome:
    with p.lock:
        card, _ = _card_call(p, call, "/card/get")
        return Outcome(ok(card=p.cards.view(card)))


def modify_stock(p: FakePlatform, call: Call) -> Outcome:
    with p.lock:
        card, body = _card_call(p, call, "/card/modifystock")
        increase = _int_field(body, "increase_stock_value")
        reduce = _int_field(body, "reduce_stock_value")
        p.cards.modify_stock(card, increase, reduce)
        return Outcome(ok())


def code_deposit(p: FakePlatform, call: Call) -> Outcome:
    with p.lock:
        card, body = _card_call(p, call, "/card/code/deposit")
        return Outcome(ok(**p.cards.deposit(card, body.get("code"))))


def deposit_count(p: FakePlatform, call: Call) -> Outcome:
    with p.lock:
        card, _ = _card_call(p, call, "/card/code/getdepositcount")
        return Outcome(ok(count=len(card.deposited)))


def check_code(p: FakePlatform, call: Call) -> Outcome:
    with p.lock:
        card, body = _card_call(p, call, "/card/code/checkcode")
        exist, not_exist = p.cards.check(card, body.get("code"))
        return Outcome(ok(exist_code=exist, not_exist_code=not_exist))


def code_get(p: FakePlatform, call: Call) -> Outcome:
    body = call.json()
    with p.lock:
        oa = p.authorize(call.access_token, "/card/code/get")
        p.require_custom_code(oa, body.get("card_id"))
        user_card = p.cards.user_card(oa.appid, body.get("card_id"), body.get("code"))
        check_consume = body.get("check_consume", True) not in (False, "false", 0)
        return Outcome(ok(**p.cards.code_view(user_card, p.now(), check_consume)))


def code_consume(p: FakePlatform, call: Call) -> Outcome:
    body = call.json()
    with p.lock:
        oa = p.authorize(call.access_token, "/card/code/consume")
        p.require_custom_code(oa, body.get("card_id"))
        user_card = p.cards.user_card(oa.appid, body.get("card_id"), body.get("code"))
        p.cards.require_usable(user_card, p.now())
        user_card.status = CONSUMED
        event = UserConsumeCard(
            to_user=oa.original_id,
            from_user=user_card.openid,
            create_time=int(p.now()),
            card_id=user_card.card_id,
            code=user_card.code,
            consume_source="FROM_API",
        )
        answer = ok(card={"card_id": user_card.card_id}, openid=user_card.openid)
        return Outcome(answer, [(p.push_target(oa.appid), event)])


def code_decrypt(p: FakePlatform, call: Call) -> Outcome:
    body = call.json()
    with p.lock:
        oa = p.authorize(call.access_token, "/card/code/decrypt")
        return Outcome(ok(code=p.cards.decrypt(oa.appid, body.get("encrypt_code"))))


def code_unavailable(p: FakePlatform, call: Call) -> Outcome:
    body = call.json()
    with p.lock:
        oa = p.authorize(call.access_token, "/card/code/unavailable")
        user_card = p.cards.user_card(oa.appid, body.get("card_id"), body.get("code"))
        status = user_card.effective_status(p.now())
        if status == CONSUMED:
            raise ApiError(40099)
        if status != NORMAL:
            raise ApiError(40127, status)
        user_card.status = UNAVAILABLE
        return Outcome(ok())


def set_test_whitelist(p: FakePlatform, call: Call) -> Outcome:
    body = call.json()
    with p.lock:
        oa = p.authorize(call.access_token, "/card/testwhitelist/set")
        for openid in body.get("openid") or []:
            person = p.registry.person_by_openid(oa.appid, str(openid))
            if person is None:
                raise ApiError(40003, str(openid))
            p.registry.whitelist(oa.appid, person)
        return Outcome(ok())


def jscode2session(p: FakePlatform, call: Call) -> Outcome:
    with p.lock:
        if call.query.get("grant_type") != "authorization_code":
            raise ApiError(40002)
        appid = call.query.get("appid") or ""
        mp = p.registry.mps.get(appid)
        if mp is None:
            raise ApiError(40013)
        if call.query.get("secret") != mp.secret:
            raise ApiError(40125)
        p.quotas.charge(appid, "/sns/jscode2session", p.now())
        person = p.registry.redeem_login_code(call.query.get("js_code") or "", appid, p.now())
        answer: dict[str, Any] = {
            "openid": p.registry.openid(person.name, appid),
            "session_key": secrets.token_urlsafe(18),
        }
        if mp.oa_appid is not None:
            answer["unionid"] = person.unionid
        return Outcome(answer)


AppidSource = Literal["query", "body", "token"]


@dataclass(frozen=True)
class Route:
    method: Literal["GET", "POST"]
    handler: Callable[[FakePlatform, Call], Outcome]
    appid_from: AppidSource = "token"


ROUTES: dict[str, Route] = {
    "/cgi-bin/token": Route("GET", token, "query"),
    "/cgi-bin/stable_token": Route("POST", stable_token, "body"),
    "/cgi-bin/ticket/getticket": Route("GET", getticket),
    "/cgi-bin/clear_quota": Route("POST", clear_quota),
    "/card/create": Route("POST", card_create),
    "/card/get": Route("POST", card_get),
    "/card/modifystock": Route("POST", modify_stock),
    "/card/code/deposit": Route("POST", code_deposit),
    "/card/code/getdepositcount": Route("POST", deposit_count),
    "/card/code/checkcode": Route("POST", check_code),
    "/card/code/get": Route("POST", code_get),
    "/card/code/consume": Route("POST", code_consume),
    "/card/code/decrypt": Route("POST", code_decrypt),
    "/card/code/unavailable": Route("POST", code_unavailable),
    "/card/testwhitelist/set": Route("POST", set_test_whitelist),
    "/sns/jscode2session": Route("GET", jscode2session, "query"),
}
#: Endpoints whose success hands out an access_token (counted as token fetches).
TOKEN_ENDPOINTS = frozenset({"/cgi-bin/token", "/cgi-bin/stable_token"})


def appid_hint(p: FakePlatform, route: Route, call: Call) -> str | None:
    """Best-effort appid of a call, for fault scoping and statistics (never for authorisation)."""
    if route.appid_from == "query":
        return call.query.get("appid")
    if route.appid_from == "body":
        try:
            appid = call.json().get("appid")
        except ApiError:
            return None
        return appid if isinstance(appid, str) else None
    with p.lock:
        return p.tokens.owner(call.access_token or "")
