"""Call statistics of the fake: calls per endpoint (and per appid), token fetches per appid and
errcodes returned per endpoint."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from typing import Any


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._calls_by_appid: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._errcodes: defaultdict[str, Counter[int]] = defaultdict(Counter)
        self._token_fetches: Counter[str] = Counter()

    def call(self, endpoint: str, appid: str | None) -> None:
        """Counted on arrival, so a call the client gave up on (latency) is still seen."""
        with self._lock:
            self._calls[endpoint] += 1
            if appid is not None:
                self._calls_by_appid[appid][endpoint] += 1

    def answered(self, endpoint: str, errcode: int) -> None:
        if errcode != 0:
            with self._lock:
                self._errcodes[endpoint][errcode] += 1

    def token_fetched(self, appid: str) -> None:
        with self._lock:
            self._token_fetches[appid] += 1

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._calls_by_appid.clear()
            self._errcodes.clear()
            self._token_fetches.clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": dict(self._calls),
                "calls_by_appid": {appid: dict(c) for appid, c in self._calls_by_appid.items()},
                "token_fetches": dict(self._token_fetches),
                "errcodes": {ep: {str(code): n for code, n in c.items()} for ep, c in self._errcodes.items()},
            }
