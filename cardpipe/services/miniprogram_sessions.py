"""Mini Program session tokens: what the client sends on every claim call.

A token is ``<payload>.<mac>``, both base64url. The payload is JSON with the MP appid, the OA it
is bound to, the user's MP openid and unionid, and the expiry; the MAC is HMAC-SHA256 with a key
derived from the configured secret keys (the first key signs, every key verifies, so keys can
rotate). The token is signed, not encrypted: it holds nothing the user does not already know.
jscode2session's ``session_key`` is neither put in it nor kept: nothing in cardpipe needs it, so
it never leaves the call that received it.

Verification is cached per token in-process, because the hot poll path sees the same token every
second; the expiry is still checked on every call. A mini program's AppSecret and official
account are cached in-process for ``MINI_PROGRAM_CACHE_TTL_S``: every login needs them, and
reading (and decrypting) them from the database was a transaction per login. A login writes
nothing but its readiness signal (did it carry a unionid?), and that at most once per
``LOGIN_SIGNAL_INTERVAL_S`` per mini program and process unless the answer changed: at a launch
every login wrote the same value to the same key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import select

from cardpipe import secretbox
from cardpipe.db import session_scope
from cardpipe.runtime import redis_client, wechat_http
from cardpipe.services.readiness import signals
from cardpipe.settings import get_settings
from models import MiniProgram, OfficialAccount
from wechat.client import MiniProgramApi

KEY_PURPOSE = "mp-session-token"
#: Longer strings are refused before any decoding (a real token is about 250 characters).
MAX_TOKEN_LENGTH = 1024
#: Verified tokens kept per process (about 660 bytes each). Enough for every user polling at a
#: launch at once; a larger cache only grew the api process by each new user's session for hours.
_VERIFIED_CACHE_SIZE = 4_096
MINI_PROGRAM_CACHE_TTL_S = 30.0
LOGIN_SIGNAL_INTERVAL_S = 10.0

_mini_programs: dict[str, tuple[float, tuple[str, str]]] = {}
_mini_programs_lock = threading.Lock()
#: mini program → (when its login signal is due again, whether the last one recorded had a unionid)
_login_signals: dict[str, tuple[float, bool]] = {}


class InvalidSession(Exception):
    """The token is malformed, forged or expired. The message says which, never the token."""


class UnknownMiniProgram(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class MpSession:
    mp_appid: str
    #: The OA the mini program is bound to: where its cards, tickets and credentials live.
    oa_appid: str
    openid: str
    unionid: str | None
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: str) -> bytes:
    return hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()


def issue_token(session: MpSession) -> str:
    claims = {
        "mp": session.mp_appid,
        "oa": session.oa_appid,
        "o": session.openid,
        "u": session.unionid,
        "exp": session.expires_at,
    }
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
    return f"{payload}.{_b64(_mac(secretbox.derived_keys(KEY_PURPOSE)[0], payload))}"


@lru_cache(maxsize=_VERIFIED_CACHE_SIZE)
def _decode(token: str) -> MpSession:
    """The session a well-formed, authentic token carries (expiry not checked: cached)."""
    payload, _, mac = token.partition(".")
    try:
        given = _unb64(mac)
        if not any(hmac.compare_digest(_mac(key, payload), given) for key in secretbox.derived_keys(KEY_PURPOSE)):
            raise InvalidSession("session token signature does not match")
        claims = json.loads(_unb64(payload))
        return MpSession(
            mp_appid=str(claims["mp"]),
            oa_appid=str(claims["oa"]),
            openid=str(claims["o"]),
            unionid=None if claims["u"] is None else str(claims["u"]),
            expires_at=int(claims["exp"]),
        )
    except (binascii.Error, UnicodeError, ValueError, KeyError, TypeError) as exc:
        raise InvalidSession("session token is malformed") from exc


def verify_token(token: str, *, now: float | None = None) -> MpSession:
    if not token or len(token) > MAX_TOKEN_LENGTH or "." not in token:
        raise InvalidSession("session token is malformed")
    session = _decode(token)
    if session.expires_at <= (time.time() if now is None else now):
        raise InvalidSession("session token has expired; log in again")
    return session


def _mini_program(mp_appid: str) -> tuple[str, str]:
    """(AppSecret, official account appid) of a registered mini program; UnknownMiniProgram."""
    with _mini_programs_lock:
        cached = _mini_programs.get(mp_appid)
    if cached and cached[0] > time.monotonic():
        return cached[1]
    with session_scope() as db:
        row = db.execute(
            select(MiniProgram.app_secret, OfficialAccount.appid)
            .join(OfficialAccount, OfficialAccount.id == MiniProgram.official_account_id)
            .where(MiniProgram.appid == mp_appid)
        ).one_or_none()
    if row is None:
        raise UnknownMiniProgram(f"no mini program {mp_appid!r}")
    found = (str(row[0]), str(row[1]))
    with _mini_programs_lock:
        _mini_programs[mp_appid] = (time.monotonic() + MINI_PROGRAM_CACHE_TTL_S, found)
    return found


def login(mp_appid: str, js_code: str) -> tuple[str, MpSession]:
    """Exchange ``wx.login``'s code for a session token (one jscode2session call to WeChat).
    Raises UnknownMiniProgram, or the typed ``wechat.errors`` error WeChat answered."""
    secret, oa_appid = _mini_program(mp_appid)
    answer = MiniProgramApi(wechat_http()).jscode2session(mp_appid, secret, js_code)
    _record_login(mp_appid, with_unionid=answer.unionid is not None)
    session = MpSession(
        mp_appid=mp_appid,
        oa_appid=oa_appid,
        openid=answer.openid,
        unionid=answer.unionid,
        expires_at=int(time.time()) + get_settings().session_ttl_s,
    )
    return issue_token(session), session


def _record_login(mp_appid: str, *, with_unionid: bool) -> None:
    """The readiness signal of a login, unless this process recorded the same one lately (two
    threads racing may both write it: the same value)."""
    now = time.monotonic()
    last = _login_signals.get(mp_appid)
    if last is not None and now < last[0] and last[1] == with_unionid:
        return
    _login_signals[mp_appid] = (now + LOGIN_SIGNAL_INTERVAL_S, with_unionid)
    signals.record_login(redis_client(), mp_appid, with_unionid=with_unionid)
