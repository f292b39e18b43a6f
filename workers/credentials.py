"""Credential refresh, rotation re-sign, and the reconciles the scheduler enqueues.

Every actor is safe to run twice: a refresh re-checks the stored expiry under the account's
lock, a re-sign is guarded by state and version, a confirmation by the ticket's flags, and a
re-enqueue only sends idempotent messages. Outbound WeChat errors (quota, token, transport)
propagate to the quota-aware retries (``workers.quota_retries``). A configuration error (wrong
secret, IP not whitelisted, unknown appid) is not retried: the account backs off
(``cardpipe.services.account_health``) and the scheduler's ticks skip it until then.

Importing this module registers the bulk re-sign as a :mod:`cardpipe.rotation` listener: every
process that imports ``workers`` (workers, api, scheduler, CLI) queues a re-sign after a rotation
it caused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta

import dramatiq
from sqlalchemy import select

import workers.broker  # noqa: F401  (binds the broker before any actor is declared)
from cardpipe import clock, rotation
from cardpipe.credentials import StoredCredential
from cardpipe.db import session_scope
from cardpipe.runtime import credential_store, redis_client
from cardpipe.services import account_health, claim_cache, claim_ownership, resign
from cardpipe.services.claim_confirmation import apply as apply_confirmation
from cardpipe.services.claim_confirmation import look_up, still_unconfirmed, unconfirmed_client_claims
from cardpipe.services.preissue import tracking
from cardpipe.settings import get_settings
from models import CredentialKind, Event, EventState, OfficialAccount
from wechat.errors import ConfigurationError
from workers.preissue import issue_orders, plan_preissue

log = logging.getLogger(__name__)

#: A re-sign fan-out for one ticket version is not repeated within this window (its chunks are
#: still being worked); later runs of the scheduler catch anything they missed.
FANOUT_QUIET_S = 120
#: Tickets per ``confirm_claims`` message (one code/get each).
CONFIRM_BATCH = 50
CONFIRM_SCAN_LIMIT = 10_000
#: Orders per re-enqueued ``issue_orders`` message, and at most this many orders per event per run.
REISSUE_ORDERS_PER_MESSAGE = 500
REISSUE_ORDERS_PER_RUN = 100_000


def _batches(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _appids() -> list[str]:
    """The accounts whose credential work may run now (not backing off a configuration error)."""
    with session_scope() as session:
        return account_health.healthy_appids(session)


@contextmanager
def _configuration_watch(appid: str) -> Iterator[bool]:
    """Yields whether to go ahead (False while the account backs off a configuration error);
    records a ConfigurationError (one log line per change, no traceback, no retry) or success."""
    with session_scope() as session:
        if account_health.backing_off(session, appid):
            yield False
            return
    try:
        yield True
    except ConfigurationError as exc:
        with session_scope() as session:
            account_health.record_failure(session, appid, exc)
        return
    with session_scope() as session:
        account_health.record_success(session, appid)


def _account_id(appid: str) -> int:
    with session_scope() as session:
        account_id = session.scalar(select(OfficialAccount.id).where(OfficialAccount.appid == appid))
    if account_id is None:
        raise LookupError(f"no official account {appid!r}")
    return account_id


# -- credentials -------------------------------------------------------------------------------


@dramatiq.actor(queue_name="maintenance", max_retries=3)
def refresh_all_credentials() -> None:
    for appid in _appids():
        refresh_credentials.send(appid)


@dramatiq.actor(queue_name="maintenance", max_retries=5, min_backoff=1_000, max_backoff=60_000)
def refresh_credentials(appid: str) -> None:
    """Refresh the account's token and card ticket if they expire within the margin."""
    store = credential_store()
    margin = get_settings().credential_refresh_margin_s
    with _configuration_watch(appid) as go_ahead:
        if not go_ahead:
            return
        store.refresh(appid, CredentialKind.ACCESS_TOKEN, min_validity_s=margin)
        ticket = store.refresh(appid, CredentialKind.CARD_TICKET, min_validity_s=margin)
        if not ticket.rotated:
            _refresh_at_expiry(appid, ticket.credential)


@dramatiq.actor(queue_name="maintenance", max_retries=5, min_backoff=1_000, max_backoff=60_000)
def refresh_card_ticket_now(appid: str) -> None:
    """Fetch the card ticket now, whatever its stored expiry: clients reported signature errors
    (see :mod:`cardpipe.services.signature_reports`). A changed value re-signs via the rotation listener."""
    credential_store().refresh(appid, CredentialKind.CARD_TICKET, min_validity_s=0, force=True)


def _refresh_at_expiry(appid: str, ticket: StoredCredential) -> None:
    """WeChat hands out the same card ticket until it expires, so the next one can only be had
    right after: schedule that refresh (once), so the re-sign starts without waiting for a tick."""
    remaining = ticket.remaining(time.time())
    if remaining > get_settings().credential_refresh_margin_s:
        return
    delay_ms = max(0, int(remaining * 1000)) + 1_000
    marker = f"cardpipe:credential:{appid}:expiry-refresh:{ticket.version}"
    if redis_client().set(marker, "1", nx=True, px=delay_ms + 60_000):
        refresh_credentials.send_with_options(args=(appid,), delay=delay_ms)


# -- rotation re-sign --------------------------------------------------------------------------


@dramatiq.actor(queue_name="maintenance", max_retries=3)
def resign_all_stale() -> None:
    for appid in _appids():
        resign_account.send(appid)


@dramatiq.actor(queue_name="maintenance", max_retries=10, min_backoff=1_000, max_backoff=60_000)
def resign_account(appid: str) -> None:
    """Fan the account's stale outstanding tickets out to :func:`resign_chunk` messages."""
    with _configuration_watch(appid) as go_ahead:
        if not go_ahead:
            return
        current = credential_store().card_ticket(appid)
        account_id = _account_id(appid)
        with session_scope() as session:
            ranges = resign.stale_ranges(session, account_id, current.version, get_settings().resign_chunk_tickets)
        marker = f"cardpipe:resign-fanout:{appid}:{current.version}"
        if not ranges or not redis_client().set(marker, "1", nx=True, ex=FANOUT_QUIET_S):
            return
        for first_id, last_id in ranges:
            resign_chunk.send(appid, current.version, first_id, last_id)
        log.info("official account %s: %d re-sign chunks for ticket version %d", appid, len(ranges), current.version)


@rotation.on_ticket_rotated
def _resign_after_rotation(appid: str, version: int) -> None:
    """A new card api_ticket (any process's refresh): re-sign the account's outstanding tickets in bulk."""
    resign_account.send(appid)


@dramatiq.actor(queue_name="maintenance", max_retries=10, min_backoff=500, max_backoff=30_000)
def resign_chunk(appid: str, version: int, first_id: int, last_id: int) -> None:
    """Re-sign the account's stale outstanding tickets with ids in ``[first_id, last_id]``."""
    current = credential_store().card_ticket(appid)
    if current.version < version:
        raise RuntimeError(f"card ticket version {current.version} of {appid} is older than {version}; retrying")
    account_id = _account_id(appid)
    with session_scope() as session:
        resign.resign_range(session, account_id, first_id, last_id, api_ticket=current.value, version=current.version)


# -- reconciles --------------------------------------------------------------------------------


@dramatiq.actor(queue_name="maintenance", max_retries=3)
def confirm_client_claims() -> None:
    """Send the claims only the client reported, past the configured delay, to code/get."""
    settings = get_settings()
    with session_scope() as session:
        pending = unconfirmed_client_claims(
            session,
            now=clock.now(),
            delay_s=settings.claim_confirm_delay_s,
            max_age_s=settings.claim_confirm_max_age_s,
            limit=CONFIRM_SCAN_LIMIT,
        )
    for appid, ticket_ids in pending.items():
        for batch in _batches(ticket_ids, CONFIRM_BATCH):
            confirm_claims.send(appid, batch)


@dramatiq.actor(queue_name="wechat", max_retries=10, min_backoff=5_000, max_backoff=600_000)
def confirm_claims(appid: str, ticket_ids: list[int]) -> None:
    """code/get each ticket still unconfirmed; no transaction stays open across a WeChat call."""
    api = credential_store().card_api(appid)
    for ticket_id in ticket_ids:
        with session_scope() as session:
            claim = still_unconfirmed(session, ticket_id)
        if claim is None:
            continue
        info = look_up(claim, lambda card_id, code: api.code_get(card_id, code, check_consume=False))
        with session_scope() as session:
            apply_confirmation(session, claim, info)
            stale = claim_ownership.cache_keys(session, [claim.order_id])
        claim_cache.invalidate(redis_client(), stale)


@dramatiq.actor(queue_name="maintenance", max_retries=3)
def requeue_missing_tickets() -> None:
    """Pre-issues started a while ago and not done go back to work (an event at most once per
    ``preissue_stuck_after_s``): an event whose stock the planner never recorded as covering its
    tickets (its message was lost or dead-lettered) gets its planner again, which raises the stock
    and sends the missing orders; otherwise its orders still lacking tickets go to ``issue_orders``."""
    stuck_after = get_settings().preissue_stuck_after_s
    cutoff = clock.now() - timedelta(seconds=stuck_after)
    with session_scope() as session:
        events = list(
            session.scalars(
                select(Event.id).where(Event.state == EventState.PREISSUING, Event.preissue_started_at < cutoff)
            )
        )
    for event_id in events:
        if not redis_client().set(f"cardpipe:reissue:{event_id}", "1", nx=True, ex=max(1, int(stuck_after))):
            continue
        with session_scope() as session:
            replan = tracking.stock_uncovered(session, event_id)
            order_ids = [] if replan else tracking.orders_missing_tickets(session, event_id, REISSUE_ORDERS_PER_RUN)
        if replan:
            plan_preissue.send(event_id)
            log.warning("event %s: its stock does not cover its tickets; planner sent again", event_id)
        for chunk in _batches(order_ids, REISSUE_ORDERS_PER_MESSAGE):
            issue_orders.send(event_id, chunk)
        if order_ids:
            log.warning("event %s: %d orders still lacked tickets; issued again", event_id, len(order_ids))
