"""WeChat errcodes as the fake returns them: ``{"errcode": N, "errmsg": "... rid: <id>"}``."""

from __future__ import annotations

import secrets
from typing import Any

ERRMSG: dict[int, str] = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40013: "invalid appid",
    40014: "invalid access_token",
    40029: "invalid code",
    40056: "invalid serial code",
    40066: "invalid url",
    40071: "invalid card type",
    40073: "invalid card id",
    40078: "invalid card status",
    40079: "invalid time",
    40080: "invalid cardext",
    40097: "invalid args",
    40099: "invalid code, this code has consumed.",
    40109: "code count exceeds 100",
    40116: "invalid code",
    40122: "invalid stock",
    40125: "invalid appsecret",
    40127: "invalid user-card status! Hint: the card was given to user, but may be deleted or set unavailable",
    41001: "access_token missing",
    41011: "missing required fields",
    41012: "missing card_id",
    40164: "invalid ip",
    42001: "access_token expired",
    43001: "require GET method",
    43002: "require POST method",
    43009: "no custom code permission",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit  mustslower  retry next minute",
    45021: "field length exceeds limit",
    45030: "card_id has no api permission",
    45031: "stock is zero",
    45033: "user get card num is limited",
    47001: "data format error",
    48001: "api unauthorized",
    48006: "forbid to clear quota because of reaching the limit",
}


class ApiError(Exception):
    """A WeChat error answer. ``detail`` is appended to the standard errmsg; ``errmsg`` replaces
    it where WeChat words the answer itself (40164 names the caller's address)."""

    def __init__(self, errcode: int, detail: str = "", *, errmsg: str | None = None) -> None:
        self.errcode = errcode
        base = ERRMSG.get(errcode, "error")
        self.errmsg = errmsg if errmsg is not None else (f"{base}: {detail}" if detail else base)
        super().__init__(f"{errcode} {self.errmsg}")


def rid() -> str:
    return "-".join(secrets.token_hex(4) for _ in range(3))


def error_body(err: ApiError) -> dict[str, Any]:
    return {"errcode": err.errcode, "errmsg": f"{err.errmsg} rid: {rid()}"}


def ok(**fields: Any) -> dict[str, Any]:
    return {"errcode": 0, "errmsg": "ok", **fields}
