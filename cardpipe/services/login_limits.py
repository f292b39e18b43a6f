"""Login limits: each ``POST /v1/sessions`` costs a ``jscode2session`` call against the mini
program's quota, so logins are counted per client address and per mini program in fixed windows
shared by every api process (Redis), and refused with a retry hint past the limits.

One Lua script counts both keys and reads the window's remaining time in one round trip.
(dramatiq's ``WindowRateLimiter`` would do the counting, but with a WATCH/MULTI loop on the one
per-appid key every login of a launch touches: it retries under exactly the load it is for.)
With Redis away the limit fails open: logins go on, only the protection is missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis import Redis, RedisError

log = logging.getLogger(__name__)

_COUNT = """
local client = redis.call('INCR', KEYS[1])
if client == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local appid = redis.call('INCR', KEYS[2])
if appid == 1 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
return {client, appid, redis.call('TTL', KEYS[1]), redis.call('TTL', KEYS[2])}
"""


@dataclass(frozen=True, slots=True)
class LoginLimits:
    per_client: int
    per_appid: int
    window_s: int


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0
    reason: str = ""


def check_login(redis: Redis, limits: LoginLimits, *, client: str, appid: str) -> Verdict:
    """Count one login attempt of ``client`` for ``appid``; refused past either limit."""
    keys = [f"cardpipe:login-limit:client:{client}", f"cardpipe:login-limit:appid:{appid}"]
    try:
        client_count, appid_count, client_ttl, appid_ttl = redis.eval(_COUNT, 2, *keys, limits.window_s)
    except RedisError as exc:
        log.warning("login limit not checked (Redis: %s); letting the login through", type(exc).__name__)
        return Verdict(True)
    if int(client_count) > limits.per_client:
        return Verdict(False, max(1, int(client_ttl)), f"more than {limits.per_client} logins from this address")
    if int(appid_count) > limits.per_appid:
        return Verdict(False, max(1, int(appid_ttl)), f"more than {limits.per_appid} logins to this mini program")
    return Verdict(True)
