"""Counts claim polls for ``/metrics`` without a Redis write per poll.

The poll is the launch-day hot path (one cache read, no write). Each api process counts its
polls in memory and adds them to one Redis counter at most every :data:`FLUSH_EVERY_S`, with
the poll that finds the interval over: one ``INCRBY`` per process every few seconds, whatever
the traffic. Polls of a process that dies before its next flush are not counted; the counter
only feeds rates ("users keep polling"), for which that is noise.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.asyncio import Redis as AsyncRedis

POLLS_KEY = "cardpipe:claim-polls"
FLUSH_EVERY_S = 5.0


class PollTally:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pending = 0
        self._flushed_at = clock()

    async def count(self, redis: AsyncRedis) -> None:
        """Count one poll; add the pending ones to Redis if the last flush is old enough."""
        self._pending += 1
        now = self._clock()
        if now - self._flushed_at < FLUSH_EVERY_S:
            return
        pending, self._pending, self._flushed_at = self._pending, 0, now
        try:
            await redis.incrby(POLLS_KEY, pending)
        except Exception:
            # Redis away: keep the polls for the next flush; the poll's own answer is what matters.
            self._pending += pending
