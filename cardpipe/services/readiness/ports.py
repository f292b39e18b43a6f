"""What the readiness checks are given: the credential store (the one reader/writer of tokens and
tickets, and the guarded card API), WeChat's HTTP client for the Mini Program login probe, Redis
and the queue monitor."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from redis import Redis

from cardpipe.credentials import CredentialStore
from cardpipe.services.queues import QueueMonitor
from cardpipe.settings import Settings
from wechat.client import MiniProgramApi
from wechat.http import WeChatHttp

#: How long WeChat's passing answer to a probe is remembered (keyed by what was probed, so a
#: changed secret or card is probed afresh).
PROBE_MEMORY_S = 600


@dataclass(frozen=True)
class ReadinessPorts:
    credentials: CredentialStore
    #: For the Mini Program login probe (the card API goes through ``credentials``).
    wechat: WeChatHttp
    redis: Redis
    queues: QueueMonitor
    settings: Settings
    clock: Callable[[], float] = field(default=time.time)

    @property
    def mini_programs(self) -> MiniProgramApi:
        return MiniProgramApi(self.wechat)
