"""Per-minute samples of what ops watch on launch day, kept in Redis for the ``/ops`` charts.

The scheduler's leader takes one sample a minute (:func:`record_sample`). A sample covers the
minute that just ended, ``[m - 60 s, m)``, and is stored at most once: a ``SET NX`` claim per
minute, so two leaders in the same minute store one sample, and a re-run stores nothing. Samples
live in one sorted set scored by their minute, trimmed to the newest :data:`KEPT_MINUTES`, so
the page needs no Prometheus and Redis holds a bounded amount.

A sample maps a series name to ``{label: value}``. Each series is one function of a
:class:`SampleWindow`, registered in :data:`SERIES`; a new chart's data is one such function
and one entry there. Series named in :data:`RUNNING_TOTALS`
are stored as running totals (WeChat's error counters); :func:`history` turns them into
per-minute increases. In those and in :data:`COUNTS` a label a sample lacks was zero that minute
(nothing counted yet); elsewhere a missing value is unknown (None).

The sampler also feeds the confirmation-lag histogram that ``/metrics`` exports (the lags of the
minute's confirmations are added to its buckets once, with the sample), and drops the queue
lists of worker processes that died without shutting down.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from cardpipe.outbound import ERRCODE_COUNTER_PREFIX, stats_key
from cardpipe.redis_values import as_members, as_text
from cardpipe.services.checkin.occupancy import inside_everywhere
from cardpipe.services.queues import QueueMonitor
from models import Credential, OfficialAccount, Redemption, RedemptionResult, Ticket

SAMPLES_KEY = "cardpipe:ops:samples"
#: Newest sample's minute (epoch seconds), for the "sampler stopped" alert.
LAST_SAMPLE_KEY = "cardpipe:ops:last-sample"
#: Confirmation-lag histogram: field ``le`` → count (cumulative, Prometheus-style), plus
#: ``sum`` and ``count``.
LAG_HISTOGRAM_KEY = "cardpipe:ops:confirmation-lag"
LAG_BUCKETS_S = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
KEPT_MINUTES = 180
MINUTE_S = 60

Labelled = dict[str, float]


@dataclass(frozen=True)
class SampleWindow:
    """What a series function may read: the minute ``[start, end)`` and the ports."""

    session: Session
    redis: Redis
    monitor: QueueMonitor
    start: datetime
    end: datetime


def _per_event(window: SampleWindow, column: InstrumentedAttribute[datetime | None]) -> Labelled:
    rows = window.session.execute(
        select(Ticket.event_id, func.count())
        .where(column >= window.start, column < window.end)
        .group_by(Ticket.event_id)
    )
    return {str(event_id): float(count) for event_id, count in rows}


def claims(window: SampleWindow) -> Labelled:
    """Tickets first claimed (by either signal) in the minute, per event."""
    return _per_event(window, Ticket.claimed_at)


def confirmations(window: SampleWindow) -> Labelled:
    """Tickets WeChat's push confirmed in the minute, per event."""
    return _per_event(window, Ticket.confirmed_at)


def confirmation_lags(session: Session, start: datetime, end: datetime) -> list[float]:
    """Seconds from each claim's first signal to WeChat's confirmation, for the confirmations
    of ``[start, end)``, ascending."""
    rows = session.execute(
        select(Ticket.claimed_at, Ticket.confirmed_at).where(
            Ticket.confirmed_at >= start, Ticket.confirmed_at < end, Ticket.claimed_at.is_not(None)
        )
    )
    return sorted(
        max(0.0, (confirmed - claimed).total_seconds())
        for claimed, confirmed in rows
        if claimed is not None and confirmed is not None
    )


def _quantile(ordered: list[float], q: float) -> float:
    """Nearest-rank quantile of an ascending list."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def confirmation_lag(window: SampleWindow) -> Labelled:
    """p50 and p99 of the minute's confirmation lags (nothing if there were none)."""
    lags = confirmation_lags(window.session, window.start, window.end)
    if not lags:
        return {}
    return {"p50": _quantile(lags, 0.5), "p99": _quantile(lags, 0.99)}


def redemptions(window: SampleWindow) -> Labelled:
    """Admitted scans (``ok`` redemptions) in the minute, per event."""
    rows = window.session.execute(
        select(Redemption.event_id, func.count())
        .where(
            Redemption.created_at >= window.start,
            Redemption.created_at < window.end,
            Redemption.result == RedemptionResult.OK,
        )
        .group_by(Redemption.event_id)
    )
    return {str(event_id): float(count) for event_id, count in rows if event_id is not None}


def inside_now(window: SampleWindow) -> Labelled:
    """People inside at the minute's end, per event (each counted once, whatever the gate)."""
    return {str(g.event_id): float(g.inside_now) for g in inside_everywhere(window.session) if g.list_id is None}


def queue_ready(window: SampleWindow) -> Labelled:
    return {q.name: float(q.ready) for q in window.monitor.queues()}


def queue_oldest_age(window: SampleWindow) -> Labelled:
    return {q.name: float(q.oldest_ready_age_s or 0.0) for q in window.monitor.queues()}


def _appids(session: Session) -> list[str]:
    return list(session.scalars(select(OfficialAccount.appid).order_by(OfficialAccount.id)))


def wechat_errors(window: SampleWindow) -> Labelled:
    """Running totals of WeChat errcodes over every account (turned into per-minute increases
    by :func:`history`)."""
    totals: dict[str, float] = {}
    for appid in _appids(window.session):
        for raw_field, raw_value in window.redis.hgetall(stats_key(appid)).items():
            name = as_text(raw_field)
            if name.startswith(ERRCODE_COUNTER_PREFIX):
                errcode = name.removeprefix(ERRCODE_COUNTER_PREFIX)
                totals[errcode] = totals.get(errcode, 0.0) + float(raw_value)
    return totals


def credential_expiry(window: SampleWindow) -> Labelled:
    """Seconds each account's access_token and card ticket still live, at the minute's end."""
    rows = window.session.execute(
        select(OfficialAccount.appid, Credential.kind, Credential.expires_at).join(
            Credential, Credential.official_account_id == OfficialAccount.id
        )
    )
    return {f"{appid} {kind}": (expires_at - window.end).total_seconds() for appid, kind, expires_at in rows}


SeriesFunction = Callable[[SampleWindow], Labelled]

#: Every charted series, in the order the page shows them.
SERIES: dict[str, SeriesFunction] = {
    "claims": claims,
    "confirmations": confirmations,
    "confirmation_lag_s": confirmation_lag,
    "redemptions": redemptions,
    "inside_now": inside_now,
    "queue_ready": queue_ready,
    "queue_oldest_age_s": queue_oldest_age,
    "wechat_errors": wechat_errors,
    "credential_expires_in_s": credential_expiry,
}
#: Stored as running totals; charted as per-minute increases.
RUNNING_TOTALS = frozenset({"wechat_errors"})
#: Counts of the minute: a label missing from a sample counted zero then (other series: unknown).
COUNTS = frozenset({"claims", "confirmations", "redemptions"})


def minute_of(now: float) -> int:
    """The minute boundary at or before ``now`` (epoch seconds)."""
    return int(now // MINUTE_S) * MINUTE_S


def record_sample(session: Session, redis: Redis, monitor: QueueMonitor, *, now: float | None = None) -> bool:
    """Sample the minute that ended at or before ``now``; False if it was already sampled."""
    minute = minute_of(time.time() if now is None else now)
    claim = f"cardpipe:ops:sampled:{minute}"
    if not redis.set(claim, "1", nx=True, ex=KEPT_MINUTES * MINUTE_S):
        return False
    try:
        end = datetime.fromtimestamp(minute, UTC)
        window = SampleWindow(session, redis, monitor, end - timedelta(seconds=MINUTE_S), end)
        series = {name: function(window) for name, function in SERIES.items()}
        lags = confirmation_lags(session, window.start, window.end)
    except Exception:
        redis.delete(claim)
        raise
    pipe = redis.pipeline(transaction=True)
    pipe.zadd(SAMPLES_KEY, {json.dumps({"t": minute, "series": series}, sort_keys=True): minute})
    pipe.zremrangebyrank(SAMPLES_KEY, 0, -KEPT_MINUTES - 1)
    pipe.set(LAST_SAMPLE_KEY, minute)
    for bucket in LAG_BUCKETS_S:
        pipe.hincrby(LAG_HISTOGRAM_KEY, str(bucket), sum(1 for lag in lags if lag <= bucket))
    pipe.hincrby(LAG_HISTOGRAM_KEY, "+Inf", len(lags))
    pipe.hincrbyfloat(LAG_HISTOGRAM_KEY, "sum", sum(lags))
    pipe.execute()
    monitor.forget_departed_workers()
    return True


def sample_minute(sessions: Callable[[], AbstractContextManager[Session]], redis: Redis, monitor: QueueMonitor) -> bool:
    """The scheduler's job: :func:`record_sample` of the minute that just ended."""
    with sessions() as session:
        return record_sample(session, redis, monitor)


@dataclass(frozen=True)
class History:
    """``minutes[i]`` is the end of the i-th minute; ``series[name][label][i]`` its value, None
    where no sample was taken (or the label did not exist then)."""

    minutes: list[int]
    series: dict[str, dict[str, list[float | None]]]


def _increases(totals: list[float | None]) -> list[float | None]:
    increases: list[float | None] = [None]
    for before, after in pairwise(totals):
        if before is None or after is None:
            increases.append(None)
        else:
            # A counter that went down was reset (its hash was deleted): count from zero.
            increases.append(after - before if after >= before else after)
    return increases


def history(redis: Redis, *, minutes: int = 60, now: float | None = None) -> History:
    """The last ``minutes`` minutes of samples, aligned on a complete minute axis."""
    last = minute_of(time.time() if now is None else now)
    axis = [last - MINUTE_S * i for i in range(minutes - 1, -1, -1)]
    # One extra minute before the axis, so running totals have a first increase.
    raw = as_members(redis.zrangebyscore(SAMPLES_KEY, axis[0] - MINUTE_S, last))
    samples: dict[int, Mapping[str, Labelled]] = {}
    for member in raw:
        sample = json.loads(member)
        samples[int(sample["t"])] = sample["series"]
    extended = [axis[0] - MINUTE_S, *axis]
    series: dict[str, dict[str, list[float | None]]] = {}
    for name in SERIES:
        labels = sorted({label for sample in samples.values() for label in sample.get(name, {})})
        columns: dict[str, list[float | None]] = {}
        for label in labels:
            values = [samples[m].get(name, {}).get(label) if m in samples else None for m in extended]
            if name in COUNTS or name in RUNNING_TOTALS:
                values = [0.0 if v is None and m in samples else v for v, m in zip(values, extended, strict=True)]
            if name in RUNNING_TOTALS:
                values = _increases(values)
            columns[label] = values[1:]
        series[name] = columns
    return History(minutes=axis, series=series)


@dataclass(frozen=True)
class CredentialState:
    appid: str
    kind: str
    version: int
    expires_at: datetime
    rotated_at: datetime | None


def credential_states(session: Session) -> list[CredentialState]:
    """Every account's credentials: version, expiry and last rotation (never the value)."""
    rows = session.execute(
        select(OfficialAccount.appid, Credential.kind, Credential.version, Credential.expires_at, Credential.rotated_at)
        .join(Credential, Credential.official_account_id == OfficialAccount.id)
        .order_by(OfficialAccount.appid, Credential.kind)
    )
    return [CredentialState(*row) for row in rows]
