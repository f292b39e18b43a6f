"""Fault knobs of the fake: injected errcodes, added latency and daily quotas (→ 45009).

Rules can be scoped to one appid (the ``appid`` of a credential call, or the owner of the
access_token of any other call) so tests sharing one fake do not disturb each other.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass
from typing import Any

from wechat.fake.errcodes import ApiError

ANY_ENDPOINT = "*"
#: Published per-account daily limits (protocol page §9). ``#force`` counts stable_token
#: calls with ``force_refresh``.
DEFAULT_DAILY_LIMITS = {
    "/cgi-bin/token": 2000,
    "/cgi-bin/stable_token": 500_000,
    "/cgi-bin/stable_token#force": 20,
    "/cgi-bin/ticket/getticket": 10_000,
}
BEIJING_OFFSET_S = 8 * 3600


@dataclass
class ErrcodeRule:
    id: int
    endpoint: str
    errcode: int
    rate: float
    remaining: int | None
    appid: str | None

    def matches(self, endpoint: str, appid: str | None) -> bool:
        return self.endpoint in (endpoint, ANY_ENDPOINT) and self.appid in (None, appid)


@dataclass
class LatencyRule:
    endpoint: str
    seconds: float
    appid: str | None


class FaultInjector:
    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._errcodes: list[ErrcodeRule] = []
        self._latency: list[LatencyRule] = []
        self._next_id = 1

    def add_errcode(
        self,
        endpoint: str,
        errcode: int,
        *,
        rate: float = 1.0,
        count: int | None = None,
        appid: str | None = None,
    ) -> int:
        """Answer ``errcode`` on ``rate`` of the calls, for at most ``count`` calls if given."""
        with self._lock:
            rule = ErrcodeRule(self._next_id, endpoint, errcode, rate, count, appid)
            self._next_id += 1
            self._errcodes.append(rule)
            return rule.id

    def set_latency(self, endpoint: str, seconds: float, *, appid: str | None = None) -> None:
        with self._lock:
            self._latency = [r for r in self._latency if (r.endpoint, r.appid) != (endpoint, appid)]
            if seconds > 0:
                self._latency.append(LatencyRule(endpoint, seconds, appid))

    def latency(self, endpoint: str, appid: str | None) -> float:
        with self._lock:
            delays = [
                r.seconds for r in self._latency if r.endpoint in (endpoint, ANY_ENDPOINT) and r.appid in (None, appid)
            ]
        return max(delays, default=0.0)

    def injected_errcode(self, endpoint: str, appid: str | None) -> int | None:
        with self._lock:
            for rule in self._errcodes:
                if not rule.matches(endpoint, appid) or rule.remaining == 0:
                    continue
                if self._random.random() >= rule.rate:
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                return rule.errcode
        return None

    def clear(self) -> None:
        with self._lock:
            self._errcodes.clear()
            self._latency.clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "errcodes": [asdict(r) for r in self._errcodes],
                "latency": [asdict(r) for r in self._latency],
            }


class DailyQuotas:
    """Per-appid, per-endpoint call counters for the current Beijing day, with limits."""

    def __init__(self, defaults: dict[str, int] | None = None) -> None:
        self._defaults = dict(DEFAULT_DAILY_LIMITS if defaults is None else defaults)
        self._limits: dict[tuple[str, str], int] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._day: int | None = None

    def set_limit(self, appid: str, endpoint: str, limit: int | None) -> None:
        """``None`` goes back to the default limit (if any) of ``endpoint``."""
        if limit is None:
            self._limits.pop((appid, endpoint), None)
        else:
            self._limits[(appid, endpoint)] = limit

    def _roll(self, now: float) -> None:
        day = int((now + BEIJING_OFFSET_S) // 86_400)
        if day != self._day:
            self._day = day
            self._counts.clear()

    def charge(self, appid: str, endpoint: str, now: float) -> None:
        self._roll(now)
        key = (appid, endpoint)
        limit = self._limits.get(key, self._defaults.get(endpoint))
        used = self._counts.get(key, 0)
        if limit is not None and used >= limit:
            raise ApiError(45009)
        self._counts[key] = used + 1

    def reset(self, appid: str | None = None) -> None:
        for key in [k for k in self._counts if appid is None or k[0] == appid]:
            del self._counts[key]

    def snapshot(self, now: float) -> dict[str, dict[str, dict[str, int | None]]]:
        self._roll(now)
        result: dict[str, dict[str, dict[str, int | None]]] = {}
        for (appid, endpoint), used in self._counts.items():
            limit = self._limits.get((appid, endpoint), self._defaults.get(endpoint))
            result.setdefault(appid, {})[endpoint] = {"used": used, "limit": limit}
        return result
