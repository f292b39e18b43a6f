"""Receiving what ``wx.addCard`` told the Mini Program: the use case behind the result endpoints.

In one transaction the result is accepted (:func:`claim_results.accept`: stored, deduplicated,
what it spent re-signed) together with, when it re-signed, the outbox intent to drop the poll
records of what it re-signed. The stored result is the workers' inbox drain's to apply (the
committed row is its work item: no message). After the commit the intent is sent, the poll
records are dropped right away when Redis answers (the intent covers it otherwise), and a
signature failure is reported (best effort).

It runs on a Core ``Connection`` (no ORM ``Session``: nothing here loads an entity). A result that
spent nothing (``claim_results.spends_nothing``: every item added) writes one row in one statement,
the inbox insert, so it runs in autocommit: two round trips, no BEGIN or COMMIT. Nothing is lost by
that: the ownership read before the insert takes no lock inside a transaction either, and an
unknown order still raises before anything is stored.

The entry point passes the ports in: the invalidating actor's name, the sender of intents, Redis,
and the forced card-ticket refresh.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError

from cardpipe.credentials import StoredCredential
from cardpipe.db import autocommit, get_engine
from cardpipe.services import claim_cache, claim_results, outbox
from cardpipe.services.claim_ownership import OrderRef
from cardpipe.services.claim_results import Accepted, AddCardResult
from cardpipe.services.outbox import Intent
from cardpipe.services.signature_reports import is_signature_failure, report_signature_failure

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResultPorts:
    card_ticket: Callable[[str], StoredCredential]
    #: The actor dropping poll records (their keys are the argument).
    invalidate_actor: str
    send: Callable[[Sequence[Intent]], object]
    redis: Callable[[], Redis]
    #: Asks for a refresh of the account's card api_ticket (what it returns is not used).
    refresh_card_ticket: Callable[[str], object]


def receive(refs: Sequence[OrderRef], result: AddCardResult, ports: ResultPorts, *, oa_appid: str) -> Accepted:
    """Accept the result of the claim of ``refs`` (one caller's orders, of a mini program linked
    to official account ``oa_appid``) and queue what follows.
    Raises ``claim_ownership.UnknownOrders`` (storing nothing) if the caller lacks any of the orders, and
    WeChat's errors if the card ticket a re-sign needs cannot be had."""
    if claim_results.spends_nothing(result):
        with autocommit(get_engine()) as connection:
            accepted = claim_results.accept(connection, refs, result, card_ticket=ports.card_ticket)
    else:
        accepted = _accept_spending(refs, result, ports)
    if accepted.inbox_id is not None and is_signature_failure(result.errMsg):
        _report_signature_failure(ports, oa_appid)
    return accepted


def _accept_spending(refs: Sequence[OrderRef], result: AddCardResult, ports: ResultPorts) -> Accepted:
    """A result that may have spent tickets: accepted, re-signed and the intent added in one
    transaction; then the intent sent and the poll records dropped."""
    intents: list[Intent] = []
    cache_keys = [ref.cache_key for ref in refs]
    with get_engine().begin() as connection:
        accepted = claim_results.accept(connection, refs, result, card_ticket=ports.card_ticket)
        if accepted.resigned_orders:  # their poll records are these refs' records
            intents.append(outbox.add(connection, ports.invalidate_actor, cache_keys))
    if accepted.resigned_orders:
        claim_cache.invalidate_quietly(ports.redis(), cache_keys)
        ports.send(intents)
    return accepted


def _report_signature_failure(ports: ResultPorts, oa_appid: str) -> None:
    """Best effort: with Redis away the report is dropped (the scheduler refreshes tickets anyway)."""
    try:
        if report_signature_failure(ports.redis(), oa_appid):
            ports.refresh_card_ticket(oa_appid)
    except RedisError as exc:
        log.warning("signature failure report of %s dropped: %s", oa_appid, exc)
