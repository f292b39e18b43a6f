"""Clients' reports of 签名错误 (signature error) from ``wx.addCard``.

WeChat does not announce a new card api_ticket: if it replaces the one we sign with (early, or
with no overlap), the first sign of it is users' addCard failing with a signature error, and
every payload we re-sign with the stored ticket fails the same way. So a reported signature
failure forces one ticket refresh; a new value bumps the version, which re-signs everything
outstanding. A cooldown per account keeps a burst of reports to one getticket call, well inside
its ~10,000/day quota.
"""

from __future__ import annotations

from redis import Redis

from cardpipe.credentials import stats_key

SIGNATURE_ERROR_MARKERS = ("签名错误", "signature")
REFRESH_COOLDOWN_S = 60


def is_signature_failure(err_msg: str) -> bool:
    lowered = err_msg.lower()
    return any(marker in lowered for marker in SIGNATURE_ERROR_MARKERS)


def report_signature_failure(redis: Redis, oa_appid: str) -> bool:
    """Count the report; True when a forced ticket refresh is due (at most one per cooldown)."""
    redis.hincrby(stats_key(oa_appid), "client_signature_failures", 1)
    return bool(redis.set(f"cardpipe:signature-refresh:{oa_appid}", "1", nx=True, ex=REFRESH_COOLDOWN_S))
