"""Prometheus exposition, computed at scrape time from Redis and the database.

Workers are separate processes, so nothing here lives in process memory: queue gauges come
from the broker's keys (and live consumers per queue from the ``WorkerQueues`` middleware's
hash), actor counters from the hash the ``ActorMetrics`` middleware keeps, WeChat counters from
the per-account hashes the credential store and outbound guard keep, claim polls from the api
processes' shared counter, the confirmation-lag histogram from the ops sampler's buckets,
ticket counts, credentials, quota blocks, card stock and inbox lag from the database.
Everything the alerting rules in ``deploy/prometheus/alerts.yml`` use is exported here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cardpipe.credentials import refresh_failing_key, stats_key
from cardpipe.outbound import ERRCODE_COUNTER_PREFIX
from cardpipe.redis_values import as_text
from cardpipe.services.checkin.occupancy import inside_everywhere, scan_totals
from cardpipe.services.ops_history import LAG_BUCKETS_S, LAG_HISTOGRAM_KEY, LAST_SAMPLE_KEY
from cardpipe.services.poll_tally import POLLS_KEY
from cardpipe.services.queues import ACTOR_METRICS_KEY, QueueMonitor
from cardpipe.services.readiness.signals import LEADER_LEASE_KEY
from models import (
    RECEIVED_STATES,
    Credential,
    Event,
    InboxItem,
    OfficialAccount,
    Redemption,
    RedemptionResult,
    Ticket,
)


class CardpipeCollector(Collector):
    def __init__(self, monitor: QueueMonitor, redis: Redis, sessions: sessionmaker[Session]) -> None:
        self._monitor = monitor
        self._redis = redis
        self._sessions = sessions

    def collect(self) -> Iterator[Metric]:
        yield from self._queues()
        yield from self._actors()
        yield from self._scheduler()
        yield from self._claims()
        with self._sessions() as session:
            yield from self._tickets(session)
            yield from self._events(session)
            yield from self._inbox(session)
            yield from self._accounts(session)
            yield from self._venue(session)
            appids = list(session.scalars(select(OfficialAccount.appid)))
        yield from self._wechat(appids)

    def _queues(self) -> Iterator[Metric]:
        families = {
            field: GaugeMetricFamily(
                f"cardpipe_queue_{field}", f"dramatiq {field} messages per queue", labels=["queue"]
            )
            for field in ("ready", "delayed", "dead", "in_flight")
        }
        oldest = GaugeMetricFamily(
            "cardpipe_queue_oldest_ready_age_seconds", "age of the oldest ready message", labels=["queue"]
        )
        for queue in self._monitor.queues():
            for field, family in families.items():
                family.add_metric([queue.name], getattr(queue, field))
            oldest.add_metric([queue.name], queue.oldest_ready_age_s or 0.0)
        yield from families.values()
        yield oldest
        workers = GaugeMetricFamily("cardpipe_broker_processes", "processes with a broker heartbeat under 60 s")
        workers.add_metric([], sum(1 for w in self._monitor.workers() if w.age_s < 60))
        yield workers
        consumers = GaugeMetricFamily(
            "cardpipe_queue_live_workers",
            "worker processes consuming the queue with a fresh heartbeat",
            labels=["queue"],
        )
        for queue_name, count in self._monitor.live_consumers().items():
            consumers.add_metric([queue_name], count)
        yield consumers

    def _scheduler(self) -> Iterator[Metric]:
        pipe = self._redis.pipeline(transaction=False)
        pipe.exists(LEADER_LEASE_KEY)
        pipe.get(LAST_SAMPLE_KEY)
        leader, last_sample = pipe.execute()
        yield GaugeMetricFamily("cardpipe_scheduler_leader", "1 while a scheduler holds the leader lease", value=leader)
        yield GaugeMetricFamily(
            "cardpipe_ops_last_sample_timestamp_seconds",
            "minute of the newest ops sample the scheduler took",
            value=float(last_sample or 0),
        )

    def _claims(self) -> Iterator[Metric]:
        polls = self._redis.get(POLLS_KEY)
        yield CounterMetricFamily("cardpipe_claim_polls", "claim polls answered by the api", value=float(polls or 0))
        raw = {as_text(k): float(v) for k, v in self._redis.hgetall(LAG_HISTOGRAM_KEY).items()}
        buckets = [(str(le), raw.get(str(le), 0.0)) for le in LAG_BUCKETS_S]
        buckets.append(("+Inf", raw.get("+Inf", 0.0)))
        yield HistogramMetricFamily(
            "cardpipe_confirmation_lag_seconds",
            "seconds from a claim's first signal to WeChat's confirming push",
            buckets=buckets,
            sum_value=raw.get("sum", 0.0),
        )

    def _actors(self) -> Iterator[Metric]:
        messages = CounterMetricFamily(
            "cardpipe_actor_messages", "messages handled per actor", labels=["actor", "outcome"]
        )
        seconds = CounterMetricFamily("cardpipe_actor_seconds", "time spent in each actor", labels=["actor"])
        for raw_field, raw_value in self._redis.hgetall(ACTOR_METRICS_KEY).items():
            actor, _, kind = as_text(raw_field).rpartition("|")
            if kind == "seconds":
                seconds.add_metric([actor], float(raw_value))
            else:
                messages.add_metric([actor, kind], float(raw_value))
        yield messages
        yield seconds

    def _tickets(self, session: Session) -> Iterator[Metric]:
        tickets = GaugeMetricFamily("cardpipe_tickets", "tickets per state", labels=["state"])
        for state, count in session.execute(select(Ticket.state, func.count()).group_by(Ticket.state)):
            tickets.add_metric([state], count)
        yield tickets

    def _events(self, session: Session) -> Iterator[Metric]:
        received = GaugeMetricFamily(
            "cardpipe_event_received_tickets",
            "tickets whose card the holder received (claimed or later)",
            labels=["event_id"],
        )
        needed = GaugeMetricFamily(
            "cardpipe_card_stock_needed", "card stock the event's tickets not yet received need", labels=["event_id"]
        )
        stock = GaugeMetricFamily(
            "cardpipe_card_stock_wechat",
            "the card's WeChat stock: as pre-issue left it, less claims since",
            labels=["event_id"],
        )
        counts = dict(
            session.execute(
                select(Ticket.event_id, func.count()).where(Ticket.state.in_(RECEIVED_STATES)).group_by(Ticket.event_id)
            ).all()
        )
        admitted = dict(
            session.execute(
                select(Redemption.event_id, func.count())
                .where(Redemption.result == RedemptionResult.OK)
                .group_by(Redemption.event_id)
            ).all()
        )
        redemptions = GaugeMetricFamily(
            "cardpipe_event_redemptions", "admitted scans (ok redemptions) per event", labels=["event_id"]
        )
        events = session.execute(
            select(Event.id, Event.tickets_total, Event.wechat_stock, Event.wechat_stock_received)
        ).all()
        for event_id, tickets_total, wechat_stock, received_then in events:
            received_now = counts.get(event_id, 0)
            received.add_metric([str(event_id)], received_now)
            redemptions.add_metric([str(event_id)], admitted.get(event_id, 0))
            if wechat_stock is not None:
                needed.add_metric([str(event_id)], max(0, tickets_total - received_now))
                stock.add_metric([str(event_id)], wechat_stock - (received_now - (received_then or 0)))
        yield received
        yield redemptions
        yield needed
        yield stock

    def _accounts(self, session: Session) -> Iterator[Metric]:
        now = time.time()
        blocked = GaugeMetricFamily(
            "cardpipe_account_quota_blocked",
            "1 while the account's daily quota is exhausted (45009)",
            labels=["appid"],
        )
        for appid, until in session.execute(select(OfficialAccount.appid, OfficialAccount.quota_blocked_until)):
            blocked.add_metric([appid], 1.0 if until is not None and until.timestamp() > now else 0.0)
        yield blocked
        expires = GaugeMetricFamily(
            "cardpipe_credential_expires_in_seconds",
            "seconds the stored credential still lives",
            labels=["appid", "kind"],
        )
        rotated = GaugeMetricFamily(
            "cardpipe_credential_rotated_timestamp_seconds",
            "when the credential's value last changed",
            labels=["appid", "kind"],
        )
        failing = GaugeMetricFamily(
            "cardpipe_credential_refresh_failing_seconds",
            "how long fetching the credential has failed (0: it works)",
            labels=["appid", "kind"],
        )
        rows = session.execute(
            select(OfficialAccount.appid, Credential.kind, Credential.expires_at, Credential.rotated_at).join(
                Credential, Credential.official_account_id == OfficialAccount.id
            )
        ).all()
        pipe = self._redis.pipeline(transaction=False)
        for appid, kind, _, _ in rows:
            pipe.get(refresh_failing_key(appid, kind))
        for (appid, kind, expires_at, rotated_at), since in zip(rows, pipe.execute(), strict=True):
            expires.add_metric([appid, kind], expires_at.timestamp() - now)
            if rotated_at is not None:
                rotated.add_metric([appid, kind], rotated_at.timestamp())
            failing.add_metric([appid, kind], max(0.0, now - float(since)) if since else 0.0)
        yield expires
        yield rotated
        yield failing

    def _inbox(self, session: Session) -> Iterator[Metric]:
        backlog, oldest = session.execute(
            select(func.count(), func.min(InboxItem.received_at)).where(InboxItem.processed_at.is_(None))
        ).one()
        yield GaugeMetricFamily("cardpipe_inbox_unprocessed", "inbound callbacks not processed yet", value=backlog)
        lag = time.time() - oldest.timestamp() if oldest else 0.0
        yield GaugeMetricFamily("cardpipe_inbox_lag_seconds", "age of the oldest unprocessed callback", value=lag)

    def _venue(self, session: Session) -> Iterator[Metric]:
        inside = GaugeMetricFamily(
            "cardpipe_inside_now",
            'tickets inside now, per check-in list and per event (list=""; each ticket once)',
            labels=["event_id", "list"],
        )
        for gauge in inside_everywhere(session):
            inside.add_metric([str(gauge.event_id), gauge.list_name or ""], gauge.inside_now)
        yield inside
        scans = GaugeMetricFamily(
            "cardpipe_gate_scans",
            "gate scans per list, direction and result",
            labels=["list_id", "direction", "result"],
        )
        for list_id, direction, result, count in scan_totals(session):
            scans.add_metric([str(list_id), direction, result], count)
        yield scans

    def _wechat(self, appids: list[str]) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "cardpipe_wechat_events",
            "per-account WeChat counters: token/ticket fetches, token errors, errcodes, quota hits",
            labels=["appid", "event"],
        )
        errors = CounterMetricFamily(
            "cardpipe_wechat_errors", "errcodes WeChat answered, per account", labels=["appid", "errcode"]
        )
        for appid in appids:
            for raw_field, raw_value in self._redis.hgetall(stats_key(appid)).items():
                name = as_text(raw_field)
                events.add_metric([appid, name], float(raw_value))
                if name.startswith(ERRCODE_COUNTER_PREFIX):
                    errors.add_metric([appid, name.removeprefix(ERRCODE_COUNTER_PREFIX)], float(raw_value))
        yield events
        yield errors


def build_registry(monitor: QueueMonitor, redis: Redis, sessions: sessionmaker[Session]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CardpipeCollector(monitor, redis, sessions))
    return registry
