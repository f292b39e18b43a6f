"""Pre-issue and running-system items: every order issued and signed by the current api_ticket,
no dead letters and the bulk queue drained; a live worker for every queue, a scheduler leader,
and credentials far enough from expiry. Read from the database and Redis only."""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from cardpipe.redis_values import as_text
from cardpipe.services.readiness import signals
from cardpipe.services.readiness.ports import ReadinessPorts
from cardpipe.services.readiness.report import Item, Section, failing, ok
from models import CLAIMABLE_STATES, CredentialKind, Event, EventState, Ticket

PRE = Section.PREISSUE
SYSTEM = Section.SYSTEM
BULK_QUEUE = "preissue"


def preissue_orders(event: Event) -> Item:
    checked = "the event's progress counters"
    title = "Every order issued"
    orders = f"{event.orders_complete} of {event.orders_total} orders"
    detail = f"{orders}, {event.tickets_issued} of {event.tickets_total} tickets"
    if event.orders_total == 0:
        return failing(
            "preissue.orders", PRE, title, checked, "no orders imported", f"cardpipe import --event {event.id} FILE"
        )
    if event.state != EventState.ISSUED or event.orders_complete < event.orders_total:
        return failing(
            "preissue.orders",
            PRE,
            title,
            checked,
            f"state {event.state}: {detail}",
            f"start or finish pre-issue: cardpipe preissue {event.id} --watch",
        )
    return ok("preissue.orders", PRE, title, checked, detail)


def preissue_signatures(session: Session, ports: ReadinessPorts, event: Event, appid: str) -> Item:
    checked = "outstanding tickets against the current api_ticket version"
    title = "Signed by the current api_ticket"
    current = ports.credentials.stored(appid, CredentialKind.CARD_TICKET)
    if current is None:
        return failing(
            "preissue.signatures",
            PRE,
            title,
            checked,
            "no api_ticket held yet",
            f"cardpipe credentials refresh {appid}",
        )
    stale = session.scalar(
        select(func.count()).where(
            Ticket.event_id == event.id,
            Ticket.state.in_(CLAIMABLE_STATES),
            or_(Ticket.ticket_version.is_(None), Ticket.ticket_version < current.version),
        )
    )
    if stale:
        return failing(
            "preissue.signatures",
            PRE,
            title,
            checked,
            f"{stale} outstanding tickets signed before api_ticket version {current.version}",
            "the scheduler re-signs them within a minute (resign-stale-tickets): check it runs, then run again",
        )
    return ok(
        "preissue.signatures", PRE, title, checked, f"every outstanding ticket signed by version {current.version}"
    )


def queues_clear(ports: ReadinessPorts) -> Item:
    checked = "dead letters of every queue; ready, delayed and in-flight messages of the preissue queue"
    title = "No dead letters, pre-issue drained"
    stats = ports.queues.queues()
    dead = {q.name: q.dead for q in stats if q.dead}
    if dead:
        listed = ", ".join(f"{name} {count}" for name, count in dead.items())
        return failing(
            "preissue.queues",
            PRE,
            title,
            checked,
            f"dead letters: {listed}",
            "read why with cardpipe dlq list, fix the cause, then cardpipe dlq requeue (or purge)",
        )
    bulk = next((q for q in stats if q.name == BULK_QUEUE), None)
    if bulk and bulk.ready + bulk.delayed + bulk.in_flight:
        return failing(
            "preissue.queues",
            PRE,
            title,
            checked,
            f"preissue queue: {bulk.ready} ready, {bulk.delayed} delayed, {bulk.in_flight} in flight",
            "wait for pre-issue to finish (a worker must consume the preissue queue), then run again",
        )
    return ok("preissue.queues", PRE, title, checked, "no dead letters; the preissue queue is empty")


def workers_alive(ports: ReadinessPorts) -> Item:
    checked = "worker processes with a live heartbeat, per queue they consume"
    title = "Workers alive per queue"
    alive = ports.queues.live_consumers()
    queues = ports.queues.queue_names()
    missing = [queue for queue in queues if not alive.get(queue)]
    detail = ", ".join(f"{queue} {alive.get(queue, 0)}" for queue in queues)
    if missing:
        return failing(
            "system.workers",
            SYSTEM,
            title,
            checked,
            f"no live worker for {', '.join(missing)} ({detail})",
            f"start workers for every queue: cardpipe worker (or cardpipe worker -Q {' -Q '.join(missing)})",
        )
    return ok("system.workers", SYSTEM, title, checked, detail)


def scheduler_leader(ports: ReadinessPorts) -> Item:
    checked = "the scheduler's leader lease in Redis"
    title = "Scheduler leader"
    leader = ports.redis.get(signals.LEADER_LEASE_KEY)
    if leader is None:
        return failing(
            "system.scheduler",
            SYSTEM,
            title,
            checked,
            "no scheduler leads: tokens are not refreshed ahead, stale signatures and lost work are not swept",
            "start the scheduler: cardpipe scheduler (one or more; one leads)",
        )
    left = ports.redis.pttl(signals.LEADER_LEASE_KEY) / 1000
    return ok("system.scheduler", SYSTEM, title, checked, f"{as_text(leader)} leads (lease {left:.0f}s left)")


def credentials_fresh(ports: ReadinessPorts, appid: str) -> Item:
    """Read before any other item reads the credentials (a reader would refresh a dying one)."""
    checked = "stored access_token and api_ticket expiries"
    title = "Credentials far from expiry"
    now = ports.clock()
    problems, found = [], []
    for kind in CredentialKind:
        stored = ports.credentials.stored(appid, kind)
        if stored is None:
            problems.append(f"no {kind} held")
            continue
        left = int(stored.remaining(now))
        found.append(f"{kind} version {stored.version} expires in {left}s")
        if left <= ports.settings.credential_reader_min_validity_s:
            problems.append(f"{kind} {'expired' if left <= 0 else f'expires in {left}s'}")
    if problems:
        return failing(
            "system.credentials",
            SYSTEM,
            title,
            checked,
            "; ".join(problems),
            f"the scheduler refreshes them ahead: check it leads, or run cardpipe credentials refresh {appid}",
        )
    return ok("system.credentials", SYSTEM, title, checked, "; ".join(found))
