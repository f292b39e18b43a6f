"""The bulk re-sign after a card api_ticket rotation: a fan-out per account, then chunks of ticket ids.

Both actors are safe to run twice: the fan-out for one ticket version is not repeated within
``FANOUT_QUIET_S`` (later scheduler runs catch what it missed), and a chunk's UPDATE is guarded by
state and version (``cardpipe.services.resign``).

Importing this module registers the fan-out as a :mod:`cardpipe.rotation` listener: every process
that imports ``workers`` (workers, api, scheduler, CLI) queues a re-sign after a rotation it caused.
"""

from __future__ import annotations

import logging

import dramatiq

import workers.broker  # noqa: F401  (binds the broker before any actor is declared)
from cardpipe import rotation
from cardpipe.db import session_scope
from cardpipe.runtime import credential_store, redis_client
from cardpipe.services import resign
from cardpipe.settings import get_settings
from workers.account_health import account_id, configuration_watch, healthy_appids

log = logging.getLogger(__name__)

#: A re-sign fan-out for one ticket version is not repeated within this window (its chunks are
#: still being worked); later runs of the scheduler catch anything they missed.
FANOUT_QUIET_S = 120


@dramatiq.actor(queue_name="maintenance", max_retries=3)
def resign_all_stale() -> None:
    for appid in healthy_appids():
        resign_account.send(appid)


@dramatiq.actor(queue_name="maintenance", max_retries=10, min_backoff=1_000, max_backoff=60_000)
def resign_account(appid: str) -> None:
    """Fan the account's stale outstanding tickets out to :func:`resign_chunk` messages."""
    with configuration_watch(appid) as go_ahead:
        if not go_ahead:
            return
        current = credential_store().card_ticket(appid)
        owner = account_id(appid)
        with session_scope() as session:
            ranges = resign.stale_ranges(session, owner, current.version, get_settings().resign_chunk_tickets)
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
    owner = account_id(appid)
    with session_scope() as session:
        resign.resign_range(session, owner, first_id, last_id, api_ticket=current.value, version=current.version)
