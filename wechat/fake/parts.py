"""The pieces of one fake WeChat, built together so the HTTP app and the server share them."""

from __future__ import annotations

from dataclasses import dataclass

from wechat.fake.clock import OffsetClock
from wechat.fake.faults import FaultInjector
from wechat.fake.pusher import EventPusher
from wechat.fake.state import FakeConfig, FakePlatform
from wechat.fake.stats import Stats


@dataclass
class FakeParts:
    platform: FakePlatform
    pusher: EventPusher
    faults: FaultInjector
    stats: Stats

    @classmethod
    def build(
        cls,
        config: FakeConfig | None = None,
        *,
        clock: OffsetClock | None = None,
        push_timeout_s: float = 5.0,
        push_tries: int = 3,
        push_retry_delay_s: float = 0.0,
        seed: int | None = None,
    ) -> FakeParts:
        platform = FakePlatform(config, clock)
        pusher = EventPusher(
            platform.clock, timeout_s=push_timeout_s, tries=push_tries, retry_delay_s=push_retry_delay_s
        )
        return cls(platform, pusher, FaultInjector(seed), Stats())

    def reset(self) -> None:
        self.platform.reset()
        self.faults.clear()
        self.stats.reset()
        self.pusher.clear()
