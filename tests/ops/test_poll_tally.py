"""Claim polls reach /metrics through one Redis write per api process every few seconds."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis as AsyncRedis

from cardpipe.services.poll_tally import FLUSH_EVERY_S, POLLS_KEY, PollTally


def test_polls_are_added_to_redis_at_most_every_few_seconds(redis_url: str) -> None:
    now = [100.0]
    tally = PollTally(clock=lambda: now[0])

    async def run() -> list[int]:
        redis = AsyncRedis.from_url(redis_url)
        seen = []
        try:
            for _ in range(10):
                await tally.count(redis)
            seen.append(int(await redis.get(POLLS_KEY) or 0))
            now[0] += FLUSH_EVERY_S
            await tally.count(redis)
            seen.append(int(await redis.get(POLLS_KEY) or 0))
            await tally.count(redis)
            seen.append(int(await redis.get(POLLS_KEY) or 0))
        finally:
            await redis.aclose()
        return seen

    assert asyncio.run(run()) == [0, 11, 11]


def test_polls_counted_while_redis_is_away_are_kept_for_the_next_flush(redis_url: str) -> None:
    now = [0.0]
    tally = PollTally(clock=lambda: now[0])

    async def run() -> int:
        away = AsyncRedis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
        now[0] += FLUSH_EVERY_S
        await tally.count(away)
        await away.aclose()
        redis = AsyncRedis.from_url(redis_url)
        try:
            now[0] += FLUSH_EVERY_S
            await tally.count(redis)
            return int(await redis.get(POLLS_KEY) or 0)
        finally:
            await redis.aclose()

    assert asyncio.run(run()) == 2
