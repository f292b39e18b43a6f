"""Credential refresh: the account's access token and card api_ticket, before they expire.

Every actor is safe to run twice: a refresh re-checks the stored expiry under the account's lock.
Outbound WeChat errors (quota, token, transport) propagate to the quota-aware retries
(``workers.quota_retries``). A configuration error (wrong secret, IP not whitelisted, unknown
appid) is not retried: the account backs off (``workers.account_health``) and the scheduler's
ticks skip it until then. A rotated card ticket is re-signed by the listener ``workers.resign``
registers.
"""

from __future__ import annotations

import time

import dramatiq

import workers.broker  # noqa: F401  (binds the broker before any actor is declared)
from cardpipe.credentials import StoredCredential
from cardpipe.runtime import credential_store, redis_client
from cardpipe.settings import get_settings
from models import CredentialKind
from workers.account_health import configuration_watch, healthy_appids


@dramatiq.actor(queue_name="maintenance", max_retries=3)
def refresh_all_credentials() -> None:
    for appid in healthy_appids():
        refresh_credentials.send(appid)


@dramatiq.actor(queue_name="maintenance", max_retries=5, min_backoff=1_000, max_backoff=60_000)
def refresh_credentials(appid: str) -> None:
    """Refresh the account's token and card ticket if they expire within the margin."""
    store = credential_store()
    margin = get_settings().credential_refresh_margin_s
    with configuration_watch(appid) as go_ahead:
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
