"""The fake's notion of time: real time plus an offset tests (or the control API) can advance."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class OffsetClock:
    """``now()`` is ``base() + offset``. Pass a constant ``base`` for a fully manual clock."""

    def __init__(self, base: Callable[[], float] = time.time) -> None:
        self._base = base
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._base() + self._offset

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._offset += seconds
        return self.now()

    def reset(self) -> float:
        """Back to real time (what stamps pushes: a receiver refuses timestamps far from its own)."""
        with self._lock:
            self._offset = 0.0
        return self.now()
