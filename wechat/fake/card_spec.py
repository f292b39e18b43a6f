"""Validation of a ``/card/create`` body for ticket cards (protocol page §3).

Required base_info fields → 41011; UTF-8 byte lengths → 45021; enums → 40097; the inner key must
be the lower-case card_type; deposit mode needs ``use_custom_code`` and ``sku.quantity`` 0.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from wechat.fake.errcodes import ApiError

CARD_TYPES = {"MEETING_TICKET": ("meeting_detail",), "SCENIC_TICKET": ()}
REQUIRED_BASE_INFO = (
    "logo_url",
    "code_type",
    "brand_name",
    "title",
    "color",
    "notice",
    "description",
    "sku",
    "date_info",
)
MAX_BYTES = {
    "logo_url": 128,
    "code_type": 16,
    "brand_name": 36,
    "title": 27,
    "sub_title": 54,
    "color": 16,
    "notice": 48,
    "description": 3072,
    "service_phone": 24,
    "get_custom_code_mode": 32,
    "center_title": 18,
    "center_sub_title": 24,
    "center_url": 128,
    "center_app_brand_user_name": 128,
    "center_app_brand_pass": 128,
    "custom_url_name": 15,
    "custom_url": 128,
    "custom_url_sub_title": 18,
    "custom_app_brand_user_name": 128,
    "custom_app_brand_pass": 128,
    "promotion_url_name": 15,
    "promotion_url": 128,
    "promotion_url_sub_title": 18,
    "promotion_app_brand_user_name": 128,
    "promotion_app_brand_pass": 128,
    "meeting_detail": 3072,
    "map_url": 128,
    "guide_url": 128,
}
CODE_TYPES = {
    "CODE_TYPE_TEXT",
    "CODE_TYPE_BARCODE",
    "CODE_TYPE_QRCODE",
    "CODE_TYPE_ONLY_QRCODE",
    "CODE_TYPE_ONLY_BARCODE",
    "CODE_TYPE_NONE",
}
COLORS = {f"Color{n:03d}" for n in (10, 20, 30, 40, 50, 60, 70, 80, 81, 82, 90, 100, 101, 102)}
DEPOSIT_MODE = "GET_CUSTOM_CODE_MODE_DEPOSIT"
MAX_QUANTITY = 100_000_000
DAY = 86_400


@dataclass(frozen=True)
class CardSpec:
    card_type: str
    body: dict[str, Any]
    quantity: int
    use_custom_code: bool
    deposit: bool
    bind_openid: bool
    get_limit: int
    date_info: dict[str, Any]

    @property
    def inner_key(self) -> str:
        return self.card_type.lower()

    def validity(self, received_at: float) -> tuple[int, int]:
        """(begin_time, end_time) of one received card."""
        kind = self.date_info.get("type")
        if kind in ("DATE_TYPE_FIX_TIME_RANGE", 1):
            return int(self.date_info["begin_timestamp"]), int(self.date_info["end_timestamp"])
        begin = int(received_at) + int(self.date_info.get("fixed_begin_term", 0)) * DAY
        return begin, begin + int(self.date_info.get("fixed_term", 0)) * DAY


def _require_int(value: object, name: str, *, errcode: int = 40097) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(errcode, f"{name} must be an integer")
    return value


def _check_lengths(section: dict[str, Any], where: str) -> None:
    for name, limit in MAX_BYTES.items():
        value = section.get(name)
        if isinstance(value, str) and len(value.encode("utf-8")) > limit:
            raise ApiError(45021, f"{where}.{name} longer than {limit} bytes")


def _check_date_info(date_info: object) -> dict[str, Any]:
    if not isinstance(date_info, dict):
        raise ApiError(41011, "base_info.date_info")
    kind = date_info.get("type")
    if kind in ("DATE_TYPE_FIX_TIME_RANGE", 1):
        begin = _require_int(date_info.get("begin_timestamp"), "begin_timestamp", errcode=40079)
        end = _require_int(date_info.get("end_timestamp"), "end_timestamp", errcode=40079)
        if end <= begin:
            raise ApiError(40079, "end_timestamp must be after begin_timestamp")
    elif kind in ("DATE_TYPE_FIX_TERM", 2):
        _require_int(date_info.get("fixed_term"), "fixed_term", errcode=40079)
        _require_int(date_info.get("fixed_begin_term", 0), "fixed_begin_term", errcode=40079)
    else:
        raise ApiError(40097, f"date_info.type {kind!r} (DATE_TYPE_PERMANENT is for member cards)")
    return dict(date_info)


def _check_base_info(base_info: dict[str, Any]) -> None:
    for name in REQUIRED_BASE_INFO:
        if base_info.get(name) in (None, ""):
            raise ApiError(41011, f"base_info.{name}")
    _check_lengths(base_info, "base_info")
    if base_info["code_type"] not in CODE_TYPES:
        raise ApiError(40097, f"code_type {base_info['code_type']!r}")
    if base_info["color"] not in COLORS:
        raise ApiError(40097, f"color {base_info['color']!r}")
    if not isinstance(base_info["sku"], dict):
        raise ApiError(41011, "base_info.sku.quantity")


def parse_card(body: object) -> CardSpec:
    card = body.get("card") if isinstance(body, dict) else None
    if not isinstance(card, dict):
        raise ApiError(47001, 'body must be {"card": {...}}')
    card_type = card.get("card_type")
    if not card_type:
        raise ApiError(41011, "card.card_type")
    if card_type not in CARD_TYPES:
        raise ApiError(40071, str(card_type))
    inner = card.get(card_type.lower())
    if not isinstance(inner, dict):
        raise ApiError(41011, f"card.{card_type.lower()} (the key is the lower-case card_type)")
    base_info = inner.get("base_info")
    if not isinstance(base_info, dict):
        raise ApiError(41011, f"{card_type.lower()}.base_info")
    _check_base_info(base_info)
    for name in CARD_TYPES[card_type]:
        if inner.get(name) in (None, ""):
            raise ApiError(41011, f"{card_type.lower()}.{name}")
    _check_lengths(inner, card_type.lower())
    date_info = _check_date_info(base_info["date_info"])

    quantity = _require_int(base_info["sku"].get("quantity"), "sku.quantity", errcode=41011)
    use_custom_code = bool(base_info.get("use_custom_code", False))
    mode = base_info.get("get_custom_code_mode")
    deposit = mode == DEPOSIT_MODE
    if mode is not None and not deposit:
        raise ApiError(40097, f"get_custom_code_mode {mode!r}")
    if deposit and not use_custom_code:
        raise ApiError(40097, "deposit mode needs use_custom_code true")
    if deposit and quantity != 0:
        raise ApiError(40122, "deposit mode needs sku.quantity 0 at creation")
    if not deposit and not 0 < quantity <= MAX_QUANTITY:
        raise ApiError(40122, f"sku.quantity must be 1..{MAX_QUANTITY}")
    get_limit = _require_int(base_info.get("get_limit", 50), "get_limit")
    return CardSpec(
        card_type=card_type,
        body=copy.deepcopy(inner),
        quantity=quantity,
        use_custom_code=use_custom_code,
        deposit=deposit,
        bind_openid=bool(base_info.get("bind_openid", False)),
        get_limit=get_limit,
        date_info=date_info,
    )
