"""Applying stored client results (:mod:`cardpipe.services.claim_results`): in batches, and one
at a time.

:func:`apply_ready` takes up to ``limit`` unprocessed results with ``FOR UPDATE SKIP LOCKED`` and,
in the one transaction, applies and marks those that need no WeChat call: a successful result
whose received tickets WeChat's ``user_get_card`` push already proved (only the client's report
is recorded) and a failure that spent nothing. A result still waiting for its push is left alone
until it is ``grace_s`` old; then, like a result that spent nonces, it is handed back (in
``need_wechat``) for :func:`apply_one`, which makes its WeChat calls (``code/decrypt``, the card
ticket) before its first write, in a transaction of its own.

A batch locks and reads the tickets of its results' orders in one statement, decides each
client report on those rows (the rules of ``claims.record_client_report``) and writes the reports
together: one guarded ``UPDATE`` executed for every reported ticket (a row that no longer matches
its guard fails the batch, whose results then go to their actor).

At-least-once safe: every row is marked processed in the transaction of its guarded updates, and
only while unprocessed.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, or_, update
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.credentials import StoredCredential
from cardpipe.outbound import Deferred
from cardpipe.services import claims, inbox
from cardpipe.services.claim_results import Applied, StoredResult, apply, awaits_push, own_tickets, received_reports
from cardpipe.services.claims import ClaimOutcome, Signal
from cardpipe.services.push_effects import locked_tickets
from models import RECEIVED_STATES, Ticket


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
    reports = _ClientReports(session, locked_tickets(session, Ticket.order_id.in_(order_ids)) if order_ids else {})
    for inbox_id, stored, received_at in taken:
        own = reports.own(stored.order_ids)
        if stored.spent:
            drained.need_wechat.append(inbox_id)
            continue
        if awaits_push(stored, own):
            if (now - received_at).total_seconds() >= grace_s:
                drained.need_wechat.append(inbox_id)
            continue
        applied = reports.apply(stored, own, ports.decrypt)
        notes[inbox_id] = "; ".join(applied.notes) or None
        if applied.orders:
            drained.cache_keys += stored.cache_keys
    reports.write()
    inbox.mark_processed_many(session, notes)
    drained.inbox_ids = list(notes)
    return drained


#: One ticket's client report, guarded exactly as ``claims.record_client_report``'s update is.
_REPORT_BY_CLIENT = (
    update(Ticket.__table__)
    .where(
        Ticket.__table__.c.id == bindparam("b_id"),
        Ticket.__table__.c.card_id == bindparam("b_card_id"),
        Ticket.__table__.c.confirmed_by_wechat.is_(True),
        or_(*(Ticket.__table__.c.state == state for state in RECEIVED_STATES)),  # no IN: executemany
        Ticket.__table__.c.confirmed_by_client.is_(False),
    )
    .values(confirmed_by_client=True, updated_at=bindparam("b_now", type_=Ticket.__table__.c.updated_at.type))
)


class _ClientReports:
    """The client reports of a batch of results: decided on the locked ticket rows, written together."""

    def __init__(self, session: Session, tickets: dict[int, dict[str, Any]]) -> None:
        self.session = session
        self.tickets = tickets
        self.of_order: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for ticket in tickets.values():
            self.of_order[ticket["order_id"]].append(ticket)
        self.changes: list[dict[str, Any]] = []

    def own(self, order_ids: list[int]) -> dict[int, bool]:
        """``claim_results.own_tickets`` of these orders, from the locked rows."""
        return {
            t["id"]: bool(t["confirmed_by_wechat"]) and t["state"] in RECEIVED_STATES
            for order_id in order_ids
            for t in self.of_order[order_id]
        }

    def apply(
        self, stored: StoredResult, own: dict[int, bool], decrypt: Callable[[str], Callable[[str], str]]
    ) -> Applied:
        """``claim_results.apply`` of a result that spent nothing, its reports decided on the rows."""
        applied = Applied()
        for ticket_id, card_id, code in received_reports(stored, own, lambda c: decrypt(stored.oa_appid)(c), applied):
            if code is None:
                outcome = self._report(ticket_id, card_id)
            else:  # not reached for a result whose tickets the push proved; applied as one result would be
                self.write()
                outcome = claims.confirm_claim(
                    self.session, ticket_id=ticket_id, card_id=card_id, code=code, signal=Signal.CLIENT
                )
                self.tickets[ticket_id].update(locked_tickets(self.session, Ticket.id == ticket_id)[ticket_id])
            applied.outcomes[ticket_id] = outcome
            if outcome == ClaimOutcome.UNMATCHED:
                applied.notes.append(f"ticket {ticket_id}: decrypted code is not the ticket's code")
            else:
                applied.orders.update(stored.order_ids)
        return applied

    def _report(self, ticket_id: int, card_id: str) -> ClaimOutcome:
        ticket = self.tickets.get(ticket_id)
        if ticket is None or ticket["card_id"] != card_id or not ticket["confirmed_by_wechat"]:
            return ClaimOutcome.UNMATCHED
        if ticket["state"] not in RECEIVED_STATES or ticket["confirmed_by_client"]:
            return ClaimOutcome.DUPLICATE
        ticket["confirmed_by_client"] = True
        self.changes.append({"b_id": ticket_id, "b_card_id": card_id})
        return ClaimOutcome.CONFIRMED

    def write(self) -> None:
        """Write the reports decided so far: every reported ticket must still match its guard."""
        if not self.changes:
            return
        now = clock.now()
        params = [{**change, "b_now": now} for change in self.changes]
        self.changes = []
        changed = self.session.connection().execute(_REPORT_BY_CLIENT, params).rowcount
        if changed != len(params):
            raise RuntimeError(f"{len(params) - changed} locked tickets changed under a batch of client results")


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
