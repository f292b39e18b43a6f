"""Rate and quota discipline for every outbound WeChat call of an official account.

Every token-authenticated call (``credential_store().card_api(appid)``) and every credential fetch
passes through :meth:`OutboundGuard.call`:

* **Rate.** A per-account limit on calls per second shared by every process (dramatiq's
  ``BucketRateLimiter`` on Redis). A caller waits up to ``wechat_rate_wait_s`` for a slot, then
  :class:`RateLimited` defers its message. Credential fetches are exempt: they are rare and must
  never queue behind bulk work.
* **45009, daily quota.** The account is blocked: a Redis flag every process checks before
  calling, and ``official_accounts.quota_blocked_until / quota_reason`` for ops. Calls are
  refused with :class:`AccountBlocked` (nothing is sent; the message is deferred, not failed),
  except one probe per ``quota_probe_interval_s``. The probe is real work: if WeChat answers
  anything but 45009 the quota is back and the block ends. WeChat resets daily quotas at
  midnight Beijing time, so that is when the block ends at the latest.
* **45011, minute quota.** The account pauses until the next minute (:class:`MinuteQuotaPause`).
* **-1, busy.** ``WeChatHttp`` retries inside the call with jittered backoff; if it persists, the
  ``RetryableError`` propagates to dramatiq's retries.
* **Counters** per account in the ``stats_key`` hash (numbers only: ``/metrics`` exports them),
  among them one per errcode WeChat answered (``errcode_<n>``).

The refusals carry ``retry_at``; :func:`deferral_ms` turns any of these errors into the delay of
the retried message (``workers.quota_retries``).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from dramatiq.rate_limits import BucketRateLimiter, RateLimitExceeded
from dramatiq.rate_limits.backends import RedisBackend
from redis import Redis
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from cardpipe.db import rowcount
from cardpipe.settings import Settings, get_settings
from models import OfficialAccount
from wechat.client import TICKET_PATH, CardApi, TokenSource
from wechat.errors import DailyQuotaError, MinuteQuotaError, RetryableError, WeChatError
from wechat.http import JsonObject, WeChatHttp

log = logging.getLogger(__name__)

T = TypeVar("T")

#: WeChat's daily quotas reset at 00:00 Beijing time (UTC+8).
BEIJING_OFFSET_S = 8 * 3600
DAY_S = 86_400
#: Upper bound of the random spread added to a deferral, so deferred messages do not return
#: all at once (a fraction of the delay, capped).
JITTER_FRACTION = 0.2
MAX_JITTER_S = 5.0
#: Prefix of the per-account counter of each errcode WeChat answered.
ERRCODE_COUNTER_PREFIX = "errcode_"


def stats_key(appid: str) -> str:
    """The per-account counter hash (numeric fields only)."""
    return f"cardpipe:wechat-stats:{appid}"


def _key(appid: str, what: str) -> str:
    return f"cardpipe:outbound:{appid}:{what}"


def next_beijing_midnight(now: float) -> float:
    return (((now + BEIJING_OFFSET_S) // DAY_S) + 1) * DAY_S - BEIJING_OFFSET_S


class AccountBlocked(DailyQuotaError):
    """The account hit its daily quota (45009); nothing was sent. Retry at ``retry_at``."""

    def __init__(self, appid: str, reason: str, retry_at: float, *, endpoint: str = "") -> None:
        super().__init__(45009, f"account {appid} is blocked by its daily quota ({reason})", endpoint=endpoint)
        self.retry_at = retry_at


class MinuteQuotaPause(MinuteQuotaError):
    """The account hit a per-minute quota (45011); nothing is sent before ``retry_at``."""

    def __init__(self, appid: str, retry_at: float, *, endpoint: str = "") -> None:
        super().__init__(45011, f"account {appid} waits for the next minute", endpoint=endpoint)
        self.retry_at = retry_at


class RateLimited(RetryableError, RateLimitExceeded):
    """No slot of the account's calls-per-second limit came free in time; nothing was sent.
    Also dramatiq's ``RateLimitExceeded``, so a worker logs the deferral as the routine event it
    is (``QuotaAwareRetries`` says when the message comes back), not as a failure with a traceback."""

    def __init__(self, appid: str, retry_at: float, *, endpoint: str = "") -> None:
        super().__init__(None, f"account {appid} is at its calls-per-second limit", endpoint=endpoint)
        self.retry_at = retry_at


class Deferred(RateLimitExceeded):
    """Work better done a little later (nothing failed): its message comes back at ``retry_at``,
    uncounted, and the worker logs it as routine (like :class:`RateLimited`)."""

    def __init__(self, reason: str, retry_at: float) -> None:
        super().__init__(reason)  # type: ignore[no-untyped-call]  # dramatiq's DramatiqError.__init__ is unannotated
        self.retry_at = retry_at


def deferral_ms(
    exc: BaseException, *, now: float | None = None, rand: Callable[[], float] = random.random
) -> int | None:
    """How long to defer a message that failed with ``exc``, or None if ``exc`` is not a quota or
    rate refusal (then the ordinary retry policy applies). Deferrals are not failures."""
    now = time.time() if now is None else now
    if isinstance(exc, AccountBlocked | MinuteQuotaPause | RateLimited | Deferred):
        delay = max(0.0, exc.retry_at - now)
    elif isinstance(exc, MinuteQuotaError):
        delay = 60.0 - now % 60.0
    elif isinstance(exc, DailyQuotaError):
        delay = get_settings().quota_probe_interval_s
    else:
        return None
    jitter = min(MAX_JITTER_S, JITTER_FRACTION * delay + 0.05) * rand()
    return int((delay + jitter) * 1000)


@dataclass(frozen=True, slots=True)
class QuotaStatus:
    """What ops see of one account's outbound state."""

    appid: str
    blocked: bool
    blocked_until: datetime | None
    reason: str | None
    next_probe_in_s: float | None
    minute_pause_s: float | None
    counters: dict[str, int]


class OutboundGuard:
    """Admits, limits and accounts every outbound call; one per process, shared by all accounts."""

    def __init__(
        self,
        redis: Redis,
        sessions: sessionmaker[Session],
        *,
        calls_per_s: int,
        rate_wait_s: float,
        probe_interval_s: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._redis = redis
        self._sessions = sessions
        self._calls_per_s = calls_per_s
        self._rate_wait_s = rate_wait_s
        self._probe_interval_ms = max(1, int(probe_interval_s * 1000))
        self._clock = clock
        self._sleep = sleep
        self._backend = RedisBackend(client=redis)

    @classmethod
    def from_settings(
        cls, redis: Redis, sessions: sessionmaker[Session], settings: Settings | None = None
    ) -> OutboundGuard:
        s = settings or get_settings()
        return cls(
            redis,
            sessions,
            calls_per_s=s.wechat_calls_per_s,
            rate_wait_s=s.wechat_rate_wait_s,
            probe_interval_s=s.quota_probe_interval_s,
        )

    def call(self, appid: str, endpoint: str, send: Callable[[], T], *, limited: bool = True) -> T:
        """Run ``send`` (one WeChat request of ``appid`` to ``endpoint``) if the account may call now."""
        probing = self._admit(appid, endpoint)
        if limited and not probing:
            self._take_slot(appid, endpoint)
        self.count(appid, "calls")
        try:
            result = self._counting_errcodes(appid, send)
        except DailyQuotaError as exc:
            self.count(appid, "daily_quota")
            raise self._block(appid, endpoint, exc.errmsg) from None
        except MinuteQuotaError:
            self.count(appid, "minute_quota")
            raise self._pause_minute(appid, endpoint) from None
        except RetryableError as exc:
            self.count(appid, "busy" if exc.errcode == -1 else "transport_errors")
            raise
        except Exception:
            # WeChat answered something other than 45009: a probing call shows the quota is back.
            if probing:
                self.unblock(appid)
            raise
        if probing:
            self.unblock(appid)
        return result

    def _counting_errcodes(self, appid: str, send: Callable[[], T]) -> T:
        try:
            return send()
        except WeChatError as exc:
            if exc.errcode is not None:
                self.count(appid, f"{ERRCODE_COUNTER_PREFIX}{exc.errcode}")
            raise

    # -- admission -----------------------------------------------------------------------------

    def _admit(self, appid: str, endpoint: str) -> bool:
        """True if this call is the account's quota probe; raises if the account may not call."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(_key(appid, "blocked"))
        pipe.pttl(_key(appid, "minute-pause"))
        blocked_raw, pause_ms = pipe.execute()
        now = self._clock()
        if pause_ms and pause_ms > 0:
            self.count(appid, "refused")
            raise MinuteQuotaPause(appid, now + pause_ms / 1000, endpoint=endpoint)
        if blocked_raw is None:
            return False
        if self._redis.set(_key(appid, "probe-after"), "1", nx=True, px=self._probe_interval_ms):
            self.count(appid, "quota_probes")
            return True
        self.count(appid, "refused")
        wait_ms = self._redis.pttl(_key(appid, "probe-after"))
        reason = json.loads(blocked_raw).get("reason", "45009")
        raise AccountBlocked(appid, reason, now + max(wait_ms, 0) / 1000, endpoint=endpoint)

    def _take_slot(self, appid: str, endpoint: str) -> None:
        limiter = BucketRateLimiter(self._backend, _key(appid, "rate"), limit=self._calls_per_s, bucket=1000)
        deadline = self._clock() + self._rate_wait_s
        while True:
            with limiter.acquire(raise_on_failure=False) as acquired:
                if acquired:
                    return
            now = self._clock()
            next_second = int(now) + 1 + random.random() * 0.05
            if next_second > deadline:
                self.count(appid, "rate_limited")
                raise RateLimited(appid, next_second, endpoint=endpoint)
            self._sleep(next_second - now)

    # -- quota state ---------------------------------------------------------------------------

    def _block(self, appid: str, endpoint: str, errmsg: str) -> AccountBlocked:
        now = self._clock()
        until = next_beijing_midnight(now)
        reason = f"45009 daily quota reached on {endpoint}: {errmsg}"[:500]
        state = json.dumps({"reason": reason, "since": now, "until": until})
        newly = self._redis.set(_key(appid, "blocked"), state, nx=True, px=int((until - now) * 1000))
        if not newly:
            self._redis.set(_key(appid, "blocked"), state, xx=True, keepttl=True)
        self._redis.set(_key(appid, "probe-after"), "1", px=self._probe_interval_ms)
        with self._sessions() as session, session.begin():
            session.execute(
                update(OfficialAccount)
                .where(OfficialAccount.appid == appid)
                .values(quota_blocked_until=datetime.fromtimestamp(until, UTC), quota_reason=reason)
            )
        if newly:
            log.error("official account %s blocked: %s; outbound work waits for the quota", appid, reason)
        return AccountBlocked(appid, reason, now + self._probe_interval_ms / 1000, endpoint=endpoint)

    def _pause_minute(self, appid: str, endpoint: str) -> MinuteQuotaPause:
        now = self._clock()
        resume = (int(now) // 60 + 1) * 60
        self._redis.set(_key(appid, "minute-pause"), "1", px=max(1, int((resume - now) * 1000)))
        log.warning("official account %s hit a minute quota (45011) on %s; paused for the minute", appid, endpoint)
        return MinuteQuotaPause(appid, resume, endpoint=endpoint)

    def unblock(self, appid: str) -> bool:
        """End a 45009 block (the quota is back, or ops cleared it). True if one was in force."""
        removed = self._redis.delete(_key(appid, "blocked"), _key(appid, "probe-after"))
        with self._sessions() as session, session.begin():
            cleared = rowcount(
                session.execute(
                    update(OfficialAccount)
                    .where(OfficialAccount.appid == appid, OfficialAccount.quota_blocked_until.is_not(None))
                    .values(quota_blocked_until=None, quota_reason=None)
                )
            )
        if removed or cleared:
            log.warning("official account %s: daily quota available again, outbound work resumes", appid)
        return bool(removed or cleared)

    # -- accounting ----------------------------------------------------------------------------

    def count(self, appid: str, counter: str, amount: int = 1) -> None:
        self._redis.hincrby(stats_key(appid), counter, amount)

    def status(self, appid: str) -> QuotaStatus:
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(_key(appid, "blocked"))
        pipe.pttl(_key(appid, "probe-after"))
        pipe.pttl(_key(appid, "minute-pause"))
        pipe.hgetall(stats_key(appid))
        blocked_raw, probe_ms, pause_ms, counters = pipe.execute()
        state: Mapping[str, Any] = json.loads(blocked_raw) if blocked_raw else {}
        return QuotaStatus(
            appid=appid,
            blocked=bool(state),
            blocked_until=datetime.fromtimestamp(state["until"], UTC) if state else None,
            reason=state.get("reason"),
            next_probe_in_s=probe_ms / 1000 if state and probe_ms > 0 else (0.0 if state else None),
            minute_pause_s=pause_ms / 1000 if pause_ms > 0 else None,
            counters={k.decode(): int(v) for k, v in counters.items()},
        )


class GuardedCardApi(CardApi):
    """One account's card API with every request admitted, limited and counted by the guard.

    The ``wx_card`` ticket fetch is not rate limited (it is a credential fetch)."""

    def __init__(self, http: WeChatHttp, token_source: TokenSource, guard: OutboundGuard, appid: str) -> None:
        super().__init__(http, token_source)
        self._guard = guard
        self._appid = appid

    def _send(
        self, path: str, body: Mapping[str, Any] | None, params: Mapping[str, str] | None, token: str
    ) -> JsonObject:
        send = super()._send
        limited = path != TICKET_PATH
        return self._guard.call(self._appid, path, lambda: send(path, body, params, token), limited=limited)
