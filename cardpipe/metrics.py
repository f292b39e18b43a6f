"""Prometheus exposition, computed at scrape time from Redis and the database.

Workers are separate processes, so nothing here lives in process memory: queue gauges come
from the broker's keys, actor counters from the hash the ``ActorMetrics`` middleware keeps,
WeChat counters from the per-account hashes the credential store and outbound guard keep,
ticket counts and inbox lag from the database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cardpipe.credentials import stats_key
from cardpipe.services.checkin.occupancy import inside_everywhere, scan_totals
from cardpipe.services.queues import QueueMonitor
from models import InboxItem, OfficialAccount, Ticket
from workers.middleware import ACTOR_METRICS_KEY


class CardpipeCollector(Collector):
    def __init__(self, monitor: QueueMonitor, redis: Redis, sessions: sessionmaker[Session]) -> None:
        self._monitor = monitor
        self._redis = redis
        self._sessions = sessions

    def collect(self) -> Iterator[Metric]:
        yield from self._queues()
        yield from self._actors()
        with self._sessions() as session:
            yield from self._tickets(session)
            yield from self._inbox(session)
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

    def _actors(self) -> Iterator[Metric]:
        messages = CounterMetricFamily(
            "cardpipe_actor_messages", "messages handled per actor", labels=["actor", "outcome"]
        )
        seconds = CounterMetricFamily("cardpipe_actor_seconds", "time spent in each actor", labels=["actor"])
        for raw_field, raw_value in self._redis.hgetall(ACTOR_METRICS_KEY).items():
            actor, _, kind = raw_field.decode().rpartition("|")
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
        for appid in appids:
            for raw_field, raw_value in self._redis.hgetall(stats_key(appid)).items():
                events.add_metric([appid, raw_field.decode()], float(raw_value))
        yield events


def build_registry(monitor: QueueMonitor, redis: Redis, sessions: sessionmaker[Session]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CardpipeCollector(monitor, redis, sessions))
    return registry
