"""An isolated slice of the fake WeChat for one test: a fresh official account, a mini program
bound to it and a person, with a client wired to the fake. Tests share one fake server, so each
builds its own world instead of resetting the platform."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wechat.client import CardApi, FetchingTokenSource, MiniProgramApi, fetch_access_token
from wechat.fake import FakeWeChatControl
from wechat.http import WeChatHttp
from wechat.signing import CardExt


@dataclass
class World:
    """One OA + one MP bound to it + one person, with a client wired to the fake."""

    fake: FakeWeChatControl
    base_url: str
    oa_appid: str
    oa_secret: str
    server_token: str
    aes_key: str
    mp_appid: str
    mp_secret: str
    person: str
    original_id: str = ""
    sleeps: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.http = WeChatHttp(
            self.base_url,
            timeout_s=2.0,
            busy_retries=3,
            busy_backoff_s=0.001,
            sleep=self.sleeps.append,
            jitter=lambda: 0.5,
        )
        self.tokens = FetchingTokenSource(lambda: fetch_access_token(self.http, self.oa_appid, self.oa_secret))
        self.api = CardApi(self.http, self.tokens)
        self.mp = MiniProgramApi(self.http)

    def card_body(
        self,
        *,
        card_type: str = "MEETING_TICKET",
        quantity: int = 10,
        use_custom_code: bool = True,
        deposit: bool = False,
        bind_openid: bool = False,
        get_limit: int = 5,
        **base_info: Any,
    ) -> dict[str, Any]:
        now = int(self.fake.now())
        info: dict[str, Any] = {
            "logo_url": "http://mmbiz.qpic.cn/mmbiz/logo/0",
            "code_type": "CODE_TYPE_QRCODE",
            "brand_name": "Cardpipe Live",
            "title": "入场券",
            "color": "Color010",
            "notice": "Show the QR code at the gate",
            "description": "One entry.",
            "sku": {"quantity": quantity},
            "date_info": {
                "type": "DATE_TYPE_FIX_TIME_RANGE",
                "begin_timestamp": now,
                "end_timestamp": now + 90 * 86400,
            },
            "use_custom_code": use_custom_code,
            "bind_openid": bind_openid,
            "get_limit": get_limit,
            "can_give_friend": False,
        }
        if deposit:
            info["get_custom_code_mode"] = "GET_CUSTOM_CODE_MODE_DEPOSIT"
        info.update(base_info)
        inner: dict[str, Any] = {"base_info": info}
        if card_type == "MEETING_TICKET":
            inner["meeting_detail"] = "Hall A, 19:30"
        return {"card": {"card_type": card_type, card_type.lower(): inner}}

    def create_card(self, *, approve: bool = True, **options: Any) -> str:
        card_id = self.api.card_create(self.card_body(**options))
        if approve:
            self.fake.review_card(card_id)
        return card_id

    def ticket(self) -> str:
        return self.api.fetch_card_ticket().value

    def ext(self, card_id: str, *, ticket: str | None = None, **fields: Any) -> str:
        fields.setdefault("timestamp", int(self.fake.now()))
        fields.setdefault("nonce_str", uuid.uuid4().hex)
        return CardExt(**fields).to_json(ticket or self.ticket(), card_id)

    def add(self, card_id: str, card_ext: str, *, cancel: bool = False) -> dict[str, Any]:
        return self.fake.add_card(self.person, self.mp_appid, [{"cardId": card_id, "cardExt": card_ext}], cancel=cancel)

    def oa_openid(self) -> str:
        return self.fake.openid(self.person, self.oa_appid)


MakeWorld = Callable[..., World]


def new_world(fake: FakeWeChatControl, base_url: str, *, push_url: str | None = None, safe_mode: bool = False) -> World:
    """Register a fresh OA, MP and person at the fake."""
    tag = uuid.uuid4().hex[:10]
    world = World(
        fake=fake,
        base_url=base_url,
        oa_appid=f"wxoa{tag}",
        oa_secret=f"oa-secret-{tag}",
        server_token=f"srvtoken{tag}",
        aes_key=base64.b64encode(os.urandom(32)).decode().rstrip("="),
        mp_appid=f"wxmp{tag}",
        mp_secret=f"mp-secret-{tag}",
        person=f"person-{tag}",
        original_id=f"gh_{tag}",
    )
    fake.register_oa(
        world.oa_appid,
        world.oa_secret,
        world.server_token,
        encoding_aes_key=world.aes_key,
        push_url=push_url,
        safe_mode=safe_mode,
        original_id=world.original_id,
    )
    fake.register_mp(world.mp_appid, world.mp_secret, world.oa_appid)
    fake.add_person(world.person)
    return world
