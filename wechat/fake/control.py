"""The control API under ``/__fake__/``: what tests and the demo use to set up the world, act as a
WeChat user, inject faults and read what happened. Not part of WeChat.

Misuse answers HTTP 4xx (404 unknown entity, 400 impossible setup, 409 refused with a WeChat
errcode); simulated user actions (``addcard``) answer like the Mini Program API would.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from wechat.fake.state import Outcome

if TYPE_CHECKING:
    from wechat.fake.parts import FakeParts

PREFIX = "/__fake__"


class OfficialAccountIn(BaseModel):
    appid: str
    secret: str
    token: str
    encoding_aes_key: str | None = None
    push_url: str | None = None
    safe_mode: bool = False
    original_id: str | None = None


class AccountSettingsIn(BaseModel):
    ip_whitelist: list[str] | None = Field(default=None, description="None switches the whitelist off")
    card_feature: bool | None = None
    custom_code: bool | None = None


class CardEditIn(BaseModel):
    base_info: dict[str, Any]


class MiniProgramIn(BaseModel):
    appid: str
    secret: str
    oa_appid: str | None = None


class PersonIn(BaseModel):
    name: str
    unionid: str | None = None


class LoginIn(BaseModel):
    person: str
    mp_appid: str


class WhitelistIn(BaseModel):
    oa_appid: str
    person: str


class ReviewIn(BaseModel):
    approve: bool = True
    reason: str = ""


class AddCardIn(BaseModel):
    person: str
    mp_appid: str
    cardList: list[Any]  # wx.addCard's own spelling
    cancel: bool = False


class UserCardIn(BaseModel):
    card_id: str
    code: str
    location_name: str = ""
    staff_open_id: str = ""


class AppidIn(BaseModel):
    appid: str


class RotateIn(BaseModel):
    appid: str
    grace_s: float | None = Field(default=None, ge=0)


class AdvanceIn(BaseModel):
    seconds: float


class ErrcodeFaultIn(BaseModel):
    endpoint: str
    errcode: int
    rate: float = Field(default=1.0, ge=0, le=1)
    count: int | None = Field(default=None, ge=1)
    appid: str | None = None


class LatencyIn(BaseModel):
    endpoint: str
    seconds: float = Field(ge=0)
    appid: str | None = None


class QuotaIn(BaseModel):
    appid: str
    endpoint: str
    limit: int | None = Field(default=None, ge=0)


class QuotaResetIn(BaseModel):
    appid: str | None = None


class ConfigIn(BaseModel):
    token_ttl_s: float | None = Field(default=None, gt=0)
    ticket_ttl_s: float | None = Field(default=None, gt=0)
    token_grace_s: float | None = Field(default=None, ge=0)
    ticket_rotate_grace_s: float | None = Field(default=None, ge=0)
    login_code_ttl_s: float | None = Field(default=None, gt=0)
    push_timeout_s: float | None = Field(default=None, gt=0)
    push_tries: int | None = Field(default=None, ge=1)
    push_retry_delay_s: float | None = Field(default=None, ge=0)


class VerifyUrlIn(BaseModel):
    echostr: str = Field(default_factory=lambda: secrets.token_hex(8))


def control_router(parts: FakeParts) -> APIRouter:
    router = APIRouter(prefix=PREFIX)
    platform, pusher, faults, stats = parts.platform, parts.pusher, parts.faults, parts.stats

    def pushed(outcome: Outcome) -> dict[str, Any]:
        ids = [pusher.submit(target, event) for target, event in outcome.pushes]
        return {**outcome.body, "_fake_push_ids": ids} if ids else outcome.body

    @router.post("/reset")
    def reset() -> dict[str, Any]:
        parts.reset()
        return {"ok": True}

    @router.post("/config")
    def configure(body: ConfigIn) -> dict[str, Any]:
        changes = body.model_dump(exclude_none=True)
        push = {k: changes.pop(k) for k in list(changes) if k.startswith("push_")}
        config = platform.configure(**changes)
        pusher.timeout_s = push.get("push_timeout_s", pusher.timeout_s)
        pusher.tries = push.get("push_tries", pusher.tries)
        pusher.retry_delay_s = push.get("push_retry_delay_s", pusher.retry_delay_s)
        return {
            **vars(config),
            "push_timeout_s": pusher.timeout_s,
            "push_tries": pusher.tries,
            "push_retry_delay_s": pusher.retry_delay_s,
        }

    @router.post("/oa")
    def register_oa(body: OfficialAccountIn) -> dict[str, Any]:
        oa = platform.register_oa(
            body.appid,
            body.secret,
            body.token,
            encoding_aes_key=body.encoding_aes_key,
            push_url=body.push_url,
            safe_mode=body.safe_mode,
            original_id=body.original_id,
        )
        return {"appid": oa.appid, "original_id": oa.original_id}

    @router.post("/oa/{appid}/settings")
    def account_settings(appid: str, body: AccountSettingsIn) -> dict[str, Any]:
        changes = body.model_dump(exclude_unset=True)
        return platform.set_account(appid, **changes)

    @router.post("/oa/{appid}/verify-url")
    def verify_url(appid: str, body: VerifyUrlIn) -> dict[str, Any]:
        with platform.lock:
            target = platform.push_target(appid)
        return pusher.verify_url(target, body.echostr)

    @router.post("/mp")
    def register_mp(body: MiniProgramIn) -> dict[str, Any]:
        mp = platform.register_mp(body.appid, body.secret, body.oa_appid)
        return {"appid": mp.appid, "oa_appid": mp.oa_appid}

    @router.post("/persons")
    def add_person(body: PersonIn) -> dict[str, Any]:
        return platform.add_person(body.name, body.unionid)

    @router.get("/persons/{name}")
    def person(name: str) -> dict[str, Any]:
        return platform.person_view(name)

    @router.post("/login")
    def login(body: LoginIn) -> dict[str, Any]:
        return {"code": platform.login(body.person, body.mp_appid)}

    @router.post("/whitelist")
    def whitelist(body: WhitelistIn) -> dict[str, Any]:
        platform.whitelist(body.oa_appid, body.person)
        return {"ok": True}

    @router.post("/cards/{card_id}/review")
    def review(card_id: str, body: ReviewIn) -> dict[str, Any]:
        return pushed(platform.review_card(card_id, body.approve, body.reason))

    @router.post("/cards/{card_id}/edit")
    def edit_card(card_id: str, body: CardEditIn) -> dict[str, Any]:
        return platform.edit_card(card_id, body.base_info)

    @router.get("/cards/{card_id}")
    def card(card_id: str) -> dict[str, Any]:
        return platform.card_state(card_id)

    @router.post("/addcard")
    def add_card(body: AddCardIn) -> dict[str, Any]:
        return pushed(platform.add_card(body.person, body.mp_appid, body.cardList, cancel=body.cancel))

    @router.post("/usercards/delete")
    def user_delete(body: UserCardIn) -> dict[str, Any]:
        return pushed(platform.user_delete(body.card_id, body.code))

    @router.post("/usercards/consume")
    def back_office_consume(body: UserCardIn) -> dict[str, Any]:
        outcome = platform.back_office_consume(
            body.card_id, body.code, location_name=body.location_name, staff_open_id=body.staff_open_id
        )
        return pushed(outcome)

    @router.post("/tokens/invalidate")
    def invalidate_tokens(body: AppidIn) -> dict[str, Any]:
        return {"invalidated": platform.invalidate_tokens(body.appid)}

    @router.post("/tickets/rotate")
    def rotate_ticket(body: RotateIn) -> dict[str, Any]:
        return platform.rotate_ticket(body.appid, body.grace_s)

    @router.get("/tickets/{appid}")
    def tickets(appid: str) -> list[dict[str, Any]]:
        return platform.ticket_history(appid)

    @router.get("/clock")
    def clock() -> dict[str, float]:
        return {"now": platform.now()}

    @router.post("/clock/advance")
    def advance(body: AdvanceIn) -> dict[str, float]:
        return {"now": platform.clock.advance(body.seconds)}

    @router.post("/clock/reset")
    def reset_clock() -> dict[str, float]:
        return {"now": platform.clock.reset()}

    @router.post("/faults/errcode")
    def fault_errcode(body: ErrcodeFaultIn) -> dict[str, int]:
        rule = faults.add_errcode(body.endpoint, body.errcode, rate=body.rate, count=body.count, appid=body.appid)
        return {"id": rule}

    @router.post("/faults/latency")
    def fault_latency(body: LatencyIn) -> dict[str, bool]:
        faults.set_latency(body.endpoint, body.seconds, appid=body.appid)
        return {"ok": True}

    @router.post("/faults/clear")
    def clear_faults() -> dict[str, bool]:
        faults.clear()
        return {"ok": True}

    @router.get("/faults")
    def list_faults() -> dict[str, Any]:
        return faults.snapshot()

    @router.post("/quota")
    def set_quota(body: QuotaIn) -> dict[str, bool]:
        with platform.lock:
            platform.quotas.set_limit(body.appid, body.endpoint, body.limit)
        return {"ok": True}

    @router.post("/quota/reset")
    def reset_quota(body: QuotaResetIn) -> dict[str, bool]:
        with platform.lock:
            platform.quotas.reset(body.appid)
        return {"ok": True}

    @router.get("/stats")
    def get_stats(appid: str | None = None) -> dict[str, Any]:
        with platform.lock:
            quotas = platform.quotas.snapshot(platform.now())
        return {**stats.snapshot(), "quotas": quotas, "pushes": pusher.records(appid)}

    @router.post("/stats/reset")
    def reset_stats() -> dict[str, bool]:
        stats.reset()
        pusher.clear()
        return {"ok": True}

    @router.get("/pushes")
    def pushes(appid: str | None = None) -> list[dict[str, Any]]:
        return pusher.records(appid)

    return router
