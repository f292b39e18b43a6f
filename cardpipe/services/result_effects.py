"""Applying stored client results (:mod:`cardpipe.services.claim_results`): in batches, and one
at a time.

:func:`apply_ready` takes up to ``limit`` unprocessed results with ``FOR UPDATE SKIP LOCKED`` and,
in the one transaction, applies and marks those that need no WeChat call: a successful result
whose received tickets WeChat's ``user_get_card`` push already proved (only the client's report
is recorded) and a failure that spent nothing. A result still waiting for its push is left alone
until it is ``grace_s`` old; then, like a result that spent nonces, it is handed back (in
``need_wechat``) for :func:`apply_one`, which makes its WeChat calls (``code/decrypt``, the card
ticket) before its first write, in a transaction of its own.

At-least-once safe: every row is marked processed in the transaction of its guarded updates, and
only while unprocessed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.credentials import StoredCredential
from cardpipe.outbound import Deferred
from cardpipe.services import inbox
from cardpipe.services.claim_results import StoredResult, apply, awaits_push, own_tickets
from cardpipe.services.push_effects import lock_tickets
from models import Ticket


@dataclass(frozen=True, slots=True)
class WeChatPorts:
    #: The official account's ``code/decrypt``.
    decrypt: Callable[[str], Callable[[str], str]]
    card_ticket: Callable[[str], StoredCredential]


@dataclass
class ResultsDrained:
    #: The inbox rows applied and marked processed.
    inbox_ids: list[int] = field(default_factory=list)
    #: The poll records the changes made stale.
    cache_keys: list[str] = field(default_factory=list)
    #: Rows that need a WeChat call: for :func:`apply_one`.
    need_wechat: list[int] = field(default_factory=list)


def apply_ready(
    session: Session, *, limit: int, max_attempts: int, grace_s: float, ports: WeChatPorts, passed_to: str
) -> ResultsDrained:
    """Apply, in this transaction, the taken results that need no WeChat call (see the module);
    rows already passed on to the actor ``passed_to`` are not taken."""
    drained = ResultsDrained()
    notes: dict[int, str | None] = {}
    now = clock.now()
    taken = [
        (inbox_id, StoredResult.model_validate_json(payload), received_at)
        for inbox_id, payload, received_at in inbox.take_results(
            session, limit=limit, max_attempts=max_attempts, passed_to=passed_to
        )
    ]
    order_ids = {order_id for _, stored, _ in taken for order_id in stored.order_ids}
    if order_ids:
        lock_tickets(session, Ticket.order_id.in_(order_ids))
    for inbox_id, stored, received_at in taken:
        own = own_tickets(session, stored.order_ids)
        if stored.spent:
            drained.need_wechat.append(inbox_id)
            continue
        if awaits_push(stored, own):
            if (now - received_at).total_seconds() >= grace_s:
                drained.need_wechat.append(inbox_id)
            continue
        applied = apply(session, stored, decrypt=ports.decrypt(stored.oa_appid), card_ticket=ports.card_ticket, own=own)
        notes[inbox_id] = "; ".join(applied.notes) or None
        if applied.orders:
            drained.cache_keys += stored.cache_keys
    inbox.mark_processed_many(session, notes)
    drained.inbox_ids = list(notes)
    return drained


def apply_one(session: Session, inbox_id: int, ports: WeChatPorts, *, grace_s: float = 0.0) -> list[str] | None:
    """Apply the unprocessed result ``inbox_id`` and mark it processed: the poll records the change
    made stale, or None when the row is done or being done elsewhere. Until the row is ``grace_s``
    old a result still waiting for WeChat's push raises ``Deferred`` instead. Errors WeChat may
    clear up (busy, quota, token) propagate for a retry."""
    taken = inbox.take_result(session, inbox_id)
    if taken is None:
        return None
    payload, received_at = taken
    stored = StoredResult.model_validate_json(payload)
    own = own_tickets(session, stored.order_ids)
    grace_left_s = grace_s - (clock.now() - received_at).total_seconds()
    if grace_left_s > 0 and awaits_push(stored, own):
        raise Deferred("waiting for WeChat's user_get_card push", time.time() + grace_left_s)
    applied = apply(session, stored, decrypt=ports.decrypt(stored.oa_appid), card_ticket=ports.card_ticket, own=own)
    inbox.mark_processed(session, inbox_id, note="; ".join(applied.notes) or None)
    return stored.cache_keys if applied.orders else []
