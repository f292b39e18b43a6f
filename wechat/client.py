"""WeChat API client: credential fetches, the token source contract, the OA card API and the
Mini Program login call (protocol page §1, §2, §3, §4, §8).

Token-authenticated calls follow WxJava's rule (peers note 7): on a token error, expire the stored
token *only if it is still the one that failed*, fetch the current one and retry exactly once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from wechat.errors import RetryableError, TokenInvalidError
from wechat.http import JsonObject, WeChatHttp

MAX_CODES_PER_CALL = 100

TOKEN_PATH = "/cgi-bin/token"
STABLE_TOKEN_PATH = "/cgi-bin/stable_token"
TICKET_PATH = "/cgi-bin/ticket/getticket"
JSCODE2SESSION_PATH = "/sns/jscode2session"


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str = field(repr=False)
    expires_in: int


@dataclass(frozen=True, slots=True)
class ApiTicket:
    value: str = field(repr=False)
    expires_in: int


@dataclass(frozen=True, slots=True)
class MiniProgramSession:
    openid: str
    session_key: str = field(repr=False)
    unionid: str | None = None


def _field(data: JsonObject, name: str, endpoint: str) -> Any:
    value = data.get(name)
    if value in (None, ""):
        raise RetryableError(None, f"success response without {name}", endpoint=endpoint)
    return value


def _credential(data: JsonObject, name: str, endpoint: str) -> tuple[str, int]:
    value = str(_field(data, name, endpoint))
    try:
        expires_in = int(_field(data, "expires_in", endpoint))
    except (TypeError, ValueError):
        raise RetryableError(None, "malformed expires_in", endpoint=endpoint) from None
    return value, expires_in


def fetch_access_token(http: WeChatHttp, appid: str, secret: str) -> AccessToken:
    """``GET /cgi-bin/token``. Each call invalidates the previous token after 5 minutes."""
    params = {"grant_type": "client_credential", "appid": appid, "secret": secret}
    data = http.get(TOKEN_PATH, params)
    return AccessToken(*_credential(data, "access_token", TOKEN_PATH))


def fetch_stable_token(http: WeChatHttp, appid: str, secret: str, *, force_refresh: bool = False) -> AccessToken:
    """``POST /cgi-bin/stable_token``: the same token while valid unless ``force_refresh``."""
    body = {
        "grant_type": "client_credential",
        "appid": appid,
        "secret": secret,
        "force_refresh": force_refresh,
    }
    data = http.post(STABLE_TOKEN_PATH, body)
    return AccessToken(*_credential(data, "access_token", STABLE_TOKEN_PATH))


@runtime_checkable
class TokenSource(Protocol):
    """Where token-authenticated calls get their access_token."""

    def current(self) -> str:
        """A token believed valid, fetching one if needed."""
        ...

    def invalidate(self, failed_token: str) -> None:
        """Forget the stored token only if it is still ``failed_token`` (compare-and-expire), so a
        token another caller has already refreshed is not thrown away."""
        ...


class FetchingTokenSource:
    """In-process ``TokenSource``: caches one token and refreshes it ``margin_s`` before expiry
    (or at half its lifetime when that is shorter), one fetch at a time under a lock."""

    def __init__(
        self,
        fetch: Callable[[], AccessToken],
        margin_s: float = 300.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._margin_s = margin_s
        self._clock = clock
        self._lock = threading.Lock()
        self._value: str | None = None
        self._refresh_at = 0.0

    def current(self) -> str:
        with self._lock:
            if self._value is None or self._clock() >= self._refresh_at:
                token = self._fetch()
                margin = min(self._margin_s, token.expires_in / 2)
                self._value = token.value
                self._refresh_at = self._clock() + token.expires_in - margin
            return self._value

    def invalidate(self, failed_token: str) -> None:
        with self._lock:
            if self._value == failed_token:
                self._value = None


@dataclass(frozen=True, slots=True)
class DepositResult:
    """``/card/code/deposit`` outcome. WeChat documents counts but sends arrays of codes; the
    ``*_codes`` tuples are None when the response carried a count."""

    succ_count: int
    duplicate_count: int
    fail_count: int
    succ_codes: tuple[str, ...] | None = None
    duplicate_codes: tuple[str, ...] | None = None
    fail_codes: tuple[str, ...] | None = None


def _count_and_codes(value: object) -> tuple[int, tuple[str, ...] | None]:
    if isinstance(value, list):
        return len(value), tuple(str(v) for v in value)
    if value is None:
        return 0, None
    if isinstance(value, int | str):
        return int(value), None
    raise ValueError(f"unexpected deposit result value of type {type(value).__name__}")


def parse_deposit_result(data: Mapping[str, object]) -> DepositResult:
    succ, succ_codes = _count_and_codes(data.get("succ_code"))
    dup, dup_codes = _count_and_codes(data.get("duplicate_code"))
    fail, fail_codes = _count_and_codes(data.get("fail_code"))
    return DepositResult(succ, dup, fail, succ_codes, dup_codes, fail_codes)


@dataclass(frozen=True, slots=True)
class CheckCodesResult:
    exist: tuple[str, ...]
    not_exist: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CodeInfo:
    """``/card/code/get``. ``openid`` is the holder's *OA* openid."""

    card_id: str
    code: str
    openid: str
    can_consume: bool
    user_card_status: str
    outer_str: str = ""
    begin_time: int | None = None
    end_time: int | None = None


@dataclass(frozen=True, slots=True)
class ConsumeResult:
    card_id: str
    code: str
    openid: str


def _check_batch(codes: Sequence[str]) -> list[str]:
    if isinstance(codes, str):
        raise TypeError("codes must be a sequence of strings, not a string")
    if not 0 < len(codes) <= MAX_CODES_PER_CALL:
        raise ValueError(f"between 1 and {MAX_CODES_PER_CALL} codes per call, got {len(codes)}")
    return list(codes)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class CardApi:
    """The official account's card (卡券) API. Every call is authenticated with a token from
    ``token_source`` (which must hold the *OA's* token: an MP token gets 48001)."""

    def __init__(self, http: WeChatHttp, token_source: TokenSource) -> None:
        self._http = http
        self._tokens = token_source

    def _call(
        self,
        path: str,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> JsonObject:
        token = self._tokens.current()
        try:
            return self._send(path, body, params, token)
        except TokenInvalidError:
            self._tokens.invalidate(token)
        return self._send(path, body, params, self._tokens.current())

    def _send(
        self, path: str, body: Mapping[str, Any] | None, params: Mapping[str, str] | None, token: str
    ) -> JsonObject:
        query = {**(params or {}), "access_token": token}
        if body is None:
            return self._http.get(path, query)
        return self._http.post(path, body, query)

    def fetch_card_ticket(self) -> ApiTicket:
        """The ``wx_card`` api_ticket that signs cardExt (not the JS-SDK ``jsapi`` ticket)."""
        data = self._call(TICKET_PATH, params={"type": "wx_card"})
        return ApiTicket(*_credential(data, "ticket", TICKET_PATH))

    def card_create(self, card: Mapping[str, Any]) -> str:
        """``card`` is the whole body: ``{"card": {"card_type": …, "<card_type lower>": {…}}}``."""
        if not isinstance(card.get("card"), Mapping):
            raise ValueError('card_create expects the full body {"card": {...}}')
        return str(_field(self._call("/card/create", card), "card_id", "/card/create"))

    def card_get(self, card_id: str) -> JsonObject:
        return dict(_field(self._call("/card/get", {"card_id": card_id}), "card", "/card/get"))

    def modify_stock(self, card_id: str, increase: int = 0, reduce: int = 0) -> None:
        if increase < 0 or reduce < 0:
            raise ValueError("increase and reduce must be non-negative")
        body = {"card_id": card_id, "increase_stock_value": increase, "reduce_stock_value": reduce}
        self._call("/card/modifystock", body)

    def deposit_codes(self, card_id: str, codes: Sequence[str]) -> DepositResult:
        body = {"card_id": card_id, "code": _check_batch(codes)}
        return parse_deposit_result(self._call("/card/code/deposit", body))

    def deposit_count(self, card_id: str) -> int:
        data = self._call("/card/code/getdepositcount", {"card_id": card_id})
        return int(data.get("count", 0))

    def check_codes(self, card_id: str, codes: Sequence[str]) -> CheckCodesResult:
        data = self._call("/card/code/checkcode", {"card_id": card_id, "code": _check_batch(codes)})
        return CheckCodesResult(
            tuple(str(c) for c in data.get("exist_code") or ()),
            tuple(str(c) for c in data.get("not_exist_code") or ()),
        )

    def code_get(self, card_id: str | None, code: str, check_consume: bool = True) -> CodeInfo:
        """``card_id`` is required for custom-code cards; ``check_consume`` makes WeChat answer
        an error (40099 consumed, 40127 deleted/unavailable) instead of ``can_consume: false``."""
        body: dict[str, Any] = {"code": code, "check_consume": check_consume}
        if card_id:
            body["card_id"] = card_id
        data = self._call("/card/code/get", body)
        card = data.get("card") or {}
        return CodeInfo(
            card_id=str(card.get("card_id", card_id or "")),
            code=code,
            openid=str(data.get("openid", "")),
            can_consume=bool(data.get("can_consume", False)),
            user_card_status=str(data.get("user_card_status", "")),
            outer_str=str(data.get("outer_str") or ""),
            begin_time=_int_or_none(card.get("begin_time")),
            end_time=_int_or_none(card.get("end_time")),
        )

    def code_consume(self, card_id: str | None, code: str) -> ConsumeResult:
        body = {"code": code, **({"card_id": card_id} if card_id else {})}
        data = self._call("/card/code/consume", body)
        card = data.get("card") or {}
        return ConsumeResult(str(card.get("card_id", card_id or "")), code, str(data.get("openid", "")))

    def code_decrypt(self, encrypt_code: str) -> str:
        """The real code behind the encrypted code ``wx.addCard`` returned (pass it as received,
        not URL-encoded: it contains ``+ / =``)."""
        data = self._call("/card/code/decrypt", {"encrypt_code": encrypt_code})
        return str(_field(data, "code", "/card/code/decrypt"))

    def code_unavailable(self, card_id: str | None, code: str, reason: str = "") -> None:
        body = {"code": code, **({"card_id": card_id} if card_id else {})}
        if reason:
            body["reason"] = reason
        self._call("/card/code/unavailable", body)


class MiniProgramApi:
    """Mini Program login. Uses the *MP's* appid and secret, never the OA's."""

    def __init__(self, http: WeChatHttp) -> None:
        self._http = http

    def jscode2session(self, appid: str, secret: str, js_code: str) -> MiniProgramSession:
        params = {
            "appid": appid,
            "secret": secret,
            "js_code": js_code,
            "grant_type": "authorization_code",
        }
        data = self._http.get(JSCODE2SESSION_PATH, params)
        return MiniProgramSession(
            openid=str(_field(data, "openid", JSCODE2SESSION_PATH)),
            session_key=str(_field(data, "session_key", JSCODE2SESSION_PATH)),
            unionid=str(data["unionid"]) if data.get("unionid") else None,
        )
