"""What the running system tells the readiness checks, kept in Redis: WeChat's server-URL checks
and refused pushes per official account, the last Mini Program login per mini program (did it
carry a unionid?), and probe answers worth remembering.

Recording is best effort and never on a path that must not depend on Redis: a push or a login
is answered whether or not its signal could be written. Values hold no secret.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from redis import Redis, RedisError

log = logging.getLogger(__name__)

#: The scheduler's leader lease: held by the leading ``scheduler``, read by the checks and ``/metrics``.
LEADER_LEASE_KEY = "cardpipe:scheduler:leader"
#: Signals older than this are forgotten.
SIGNAL_TTL_S = 30 * 86_400


def _url_check_key(oa_appid: str) -> str:
    return f"cardpipe:readiness:url-check:{oa_appid}"


def _refused_push_key(oa_appid: str) -> str:
    return f"cardpipe:readiness:refused-push:{oa_appid}"


def _login_key(mp_appid: str) -> str:
    return f"cardpipe:readiness:login:{mp_appid}"


def probe_key(name: str, *parts: str) -> str:
    return "cardpipe:readiness:probe:" + ":".join((name, *parts))


def _record(redis: Redis, key: str, value: dict[str, Any], ttl_s: int = SIGNAL_TTL_S) -> None:
    try:
        redis.set(key, json.dumps({**value, "at": time.time()}), ex=ttl_s)
    except RedisError as exc:
        log.warning("readiness signal %s not recorded: %s", key, exc)


def _read(redis: Redis, key: str) -> dict[str, Any] | None:
    raw = redis.get(key)
    return json.loads(raw) if raw else None


def record_url_check(redis: Redis, oa_appid: str) -> None:
    """WeChat checked the server URL (a signed GET answered with its echostr)."""
    _record(redis, _url_check_key(oa_appid), {})


def record_refused_push(redis: Redis, oa_appid: str, reason: str) -> None:
    """A push for the account was refused (bad signature, safe-mode payload without a key…)."""
    _record(redis, _refused_push_key(oa_appid), {"reason": reason[:200]})


def record_login(redis: Redis, mp_appid: str, *, with_unionid: bool) -> None:
    """A user logged in through the mini program; WeChat sent a unionid only if the mini program
    is bound to an Open Platform account."""
    _record(redis, _login_key(mp_appid), {"unionid": with_unionid})


def last_url_check(redis: Redis, oa_appid: str) -> dict[str, Any] | None:
    return _read(redis, _url_check_key(oa_appid))


def last_refused_push(redis: Redis, oa_appid: str) -> dict[str, Any] | None:
    return _read(redis, _refused_push_key(oa_appid))


def last_login(redis: Redis, mp_appid: str) -> dict[str, Any] | None:
    return _read(redis, _login_key(mp_appid))


def remembered(redis: Redis, key: str) -> dict[str, Any] | None:
    """A passing probe answer remembered by :func:`remember`."""
    return _read(redis, key)


def remember(redis: Redis, key: str, ttl_s: int, value: dict[str, Any] | None = None) -> None:
    _record(redis, key, value or {}, ttl_s)
