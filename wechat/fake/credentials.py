"""access_token and ``wx_card`` api_ticket lifecycles (protocol page §1, §2).

* ``/cgi-bin/token``: a new token per call; the previous one stays valid for ``grace_s`` (300).
* ``/cgi-bin/stable_token``: isolated from the above; the same token while more than ``grace_s``
  remain; ``force_refresh`` kills the previous one at once.
* tickets: the same one while valid; a new one after expiry; ``rotate`` issues one now and keeps
  the previous valid for a chosen grace (capped at its own expiry).

Not thread-safe on its own: ``FakePlatform`` serialises access.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from wechat.fake.errcodes import ApiError

TokenKind = Literal["token", "stable"]
TicketMatch = Literal["current", "previous", "expired"]


@dataclass
class Issued:
    """One token or ticket. ``dead_at`` is set when it was superseded or force-invalidated."""

    value: str
    appid: str
    expires_at: float
    dead_at: float | None = None

    def alive(self, now: float) -> bool:
        return now < self.expires_at and (self.dead_at is None or now < self.dead_at)

    def kill(self, at: float) -> None:
        self.dead_at = at if self.dead_at is None else min(self.dead_at, at)

    def remaining(self, now: float) -> int:
        return max(0, math.ceil(self.expires_at - now))


class TokenStore:
    def __init__(self, ttl_s: float, grace_s: float = 300.0) -> None:
        self.ttl_s = ttl_s
        self.grace_s = grace_s
        self._by_value: dict[str, Issued] = {}
        self._by_appid: dict[str, list[Issued]] = {}
        self._latest: dict[tuple[TokenKind, str], Issued] = {}
        self._last_force: dict[str, float] = {}

    def _issue(self, kind: TokenKind, appid: str, now: float) -> Issued:
        token = Issued(secrets.token_urlsafe(96), appid, now + self.ttl_s)
        self._by_value[token.value] = token
        self._by_appid.setdefault(appid, []).append(token)
        self._latest[(kind, appid)] = token
        return token

    def issue(self, appid: str, now: float) -> Issued:
        previous = self._latest.get(("token", appid))
        if previous is not None:
            previous.kill(now + self.grace_s)
        return self._issue("token", appid, now)

    def stable(self, appid: str, now: float, *, force: bool) -> Issued:
        current = self._latest.get(("stable", appid))
        if force:
            last = self._last_force.get(appid)
            if last is not None and now - last < 30:
                raise ApiError(45011, "force_refresh at most once per 30 seconds")
            self._last_force[appid] = now
            if current is not None:
                current.kill(now)
        elif current is not None and current.alive(now) and current.expires_at - now > self.grace_s:
            return current
        return self._issue("stable", appid, now)

    def check(self, value: str, now: float) -> str:
        """The appid owning ``value``, or 40001 (unknown / superseded / invalidated) or 42001."""
        token = self._by_value.get(value)
        if token is None:
            raise ApiError(40001)
        if token.dead_at is not None and now >= token.dead_at and token.dead_at < token.expires_at:
            raise ApiError(40001)
        if now >= token.expires_at:
            raise ApiError(42001)
        return token.appid

    def owner(self, value: str) -> str | None:
        token = self._by_value.get(value)
        return token.appid if token else None

    def invalidate_all(self, appid: str, now: float) -> int:
        killed = 0
        for token in self._by_appid.get(appid, []):
            if token.alive(now):
                token.kill(now)
                killed += 1
        return killed


class TicketStore:
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._history: dict[str, list[Issued]] = {}

    def _issue(self, appid: str, now: float) -> Issued:
        ticket = Issued(secrets.token_urlsafe(64), appid, now + self.ttl_s)
        self._history.setdefault(appid, []).append(ticket)
        return ticket

    def get(self, appid: str, now: float) -> Issued:
        history = self._history.get(appid)
        if history and history[-1].alive(now):
            return history[-1]
        return self._issue(appid, now)

    def rotate(self, appid: str, now: float, grace_s: float) -> Issued:
        history = self._history.get(appid)
        if history:
            history[-1].kill(now + grace_s)
        return self._issue(appid, now)

    def peek(self, appid: str) -> list[Issued]:
        return list(self._history.get(appid, []))

    def match(self, appid: str, now: float, verifies: Callable[[str], bool]) -> TicketMatch | None:
        """Which of the OA's tickets, newest first, a signature ``verifies`` against."""
        history = self._history.get(appid, [])
        for index in range(len(history) - 1, -1, -1):
            ticket = history[index]
            if not verifies(ticket.value):
                continue
            if not ticket.alive(now):
                return "expired"
            return "current" if index == len(history) - 1 else "previous"
        return None
