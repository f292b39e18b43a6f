"""The poll payload of an order: what the Mini Program is handed for ``wx.addCard``, and the
cards ``wx.openCard`` can show.

Building a payload is the one write a poll may cause: outstanding tickets signed by an older card
ticket are re-signed, and ready ones become served (``serve`` happens once, on a cache fill, so
the common poll — a cache hit — writes nothing). What is returned is what may be cached.

A build reads once (the caller's orders with their tickets) before its writes, and runs on a
``Session`` or, from the poll's rebuild, a Core ``Connection`` (its statements are on the tables:
nothing goes through the ORM's unit of work).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from redis.exceptions import RedisError
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.credentials import CredentialStore, StoredCredential
from cardpipe.services.claim_cache import CachedClaim
from cardpipe.services.claim_ownership import (
    OrderRef,
    OrderTicket,
    OwnedOrder,
    all_owned_orders_with_tickets,
    owned_orders,
    tickets_of,
)
from cardpipe.services.claims import serve
from cardpipe.services.resign import resign_tickets
from models import (
    CLAIMABLE_STATES,
    CredentialKind,
    Ticket,
    TicketState,
)

#: What a pending poll tells the client to wait before polling again.
RETRY_AFTER_MS = 1_000
#: A pending record lives as long as the retry hint: the issue worker does not invalidate it.
PENDING_TTL_MS = RETRY_AFTER_MS
SETTLED_TTL_MS = 600_000


class ClaimStatus(StrEnum):
    #: Some ticket is not issued yet (just-in-time issue queued): poll again after the hint.
    PENDING = "pending"
    #: ``cardList`` holds every ticket still to add, ready for ``wx.addCard``.
    READY = "ready"
    #: Nothing left to add: every ticket is claimed (or redeemed, deleted, revoked).
    DONE = "done"


@dataclass(frozen=True, slots=True)
class BuiltClaim:
    claim: CachedClaim
    ttl_ms: int
    #: (event_id, order_id) of orders whose tickets are not all issued: the caller queues them.
    to_issue: list[tuple[int, int]]


def build_claims(
    session: Session | Connection, refs: Sequence[OrderRef], *, card_ticket: Callable[[str], StoredCredential]
) -> dict[str, BuiltClaim]:
    """The poll answers of one caller's orders from the database, by order number. Outstanding
    tickets signed by an older card ticket are re-signed first and ready ones become served, so
    what is returned is what may be cached and handed out. One read (the orders with their
    tickets) and the writes, whatever the number of orders. All or nothing: raises
    :class:`UnknownOrders`, changing nothing, if the caller lacks any of the orders."""
    owned, tickets = all_owned_orders_with_tickets(session, refs)
    groups: dict[str, list[OwnedOrder]] = defaultdict(list)
    for order in owned:
        groups[order.order_no].append(order)
    pending = {o.id for o in owned if sum(_issued(t) for t in tickets.get(o.id, [])) < o.ticket_count}
    built: dict[str, BuiltClaim] = {}
    for order_no, group in groups.items():
        to_issue = [(o.event_id, o.id) for o in group if o.id in pending]
        if to_issue:
            body = {"order_no": order_no, "status": ClaimStatus.PENDING, "retry_after_ms": RETRY_AFTER_MS}
            claim = CachedClaim.of(body, ticket_version=0, oa_appid=group[0].oa_appid)
            built[order_no] = BuiltClaim(claim, PENDING_TTL_MS, to_issue)
    issued = {o.id: o for o in owned if o.order_no not in built}
    cards = _claimable_cards(session, issued, {order_id: tickets.get(order_id, []) for order_id in issued}, card_ticket)
    for order_no, group in groups.items():
        if order_no in built:
            continue
        rows = [row for o in group for row in cards.get(o.id, [])]
        oa_appid = group[0].oa_appid
        if not rows:
            body = {"order_no": order_no, "status": ClaimStatus.DONE, "cardList": []}
            built[order_no] = BuiltClaim(CachedClaim.of(body, ticket_version=0, oa_appid=oa_appid), SETTLED_TTL_MS, [])
            continue
        body = {
            "order_no": order_no,
            "status": ClaimStatus.READY,
            "cardList": [{"cardId": card_id, "cardExt": card_ext} for card_id, card_ext, _ in rows],
        }
        oldest = min(version for _, _, version in rows)
        built[order_no] = BuiltClaim(CachedClaim.of(body, ticket_version=oldest, oa_appid=oa_appid), SETTLED_TTL_MS, [])
    return built


def _issued(ticket: OrderTicket) -> bool:
    """Issued: out of ``pending``, with its cardExt and the card ticket version that signed it."""
    return ticket.state != TicketState.PENDING and ticket.card_ext is not None and ticket.ticket_version is not None


def _claimable_cards(
    session: Session | Connection,
    orders: Mapping[int, OwnedOrder],
    tickets: Mapping[int, list[OrderTicket]],
    card_ticket: Callable[[str], StoredCredential],
) -> dict[int, list[tuple[str, str, int]]]:
    """order id → (card id, cardExt, ticket version) of its outstanding tickets, in seat order
    (``tickets``: every ticket of the orders, as read), after re-signing those an older card
    ticket signed (read again after that) and serving the ready ones."""
    outstanding = [t for order_id in orders for t in tickets[order_id] if t.state in CLAIMABLE_STATES]
    if not outstanding:
        return {}
    # Every card ticket before the first write: no write lock is held across a credential read.
    currents = {oa: card_ticket(oa) for oa in {orders[t.order_id].oa_appid for t in outstanding}}
    resigned = False
    for oa_appid, current in currents.items():
        stale = [
            t.id
            for t in outstanding
            if orders[t.order_id].oa_appid == oa_appid
            and (t.ticket_version is None or t.ticket_version < current.version)
        ]
        if stale:
            resign_tickets(session, stale, api_ticket=current.value, version=current.version)
            resigned = True
    serve(session, [t.id for t in outstanding if t.state == TicketState.READY])
    if resigned:
        tickets = tickets_of(session, list(orders))
    cards: dict[int, list[tuple[str, str, int]]] = defaultdict(list)
    for order_id in orders:
        for t in tickets.get(order_id, []):
            if t.state not in CLAIMABLE_STATES:
                continue
            if t.card_ext is None or t.ticket_version is None:
                raise RuntimeError(f"an outstanding ticket of order {order_id} is not signed")
            cards[order_id].append((t.card_id, t.card_ext, t.ticket_version))
    return cards


#: Tickets in the holder's WeChat card package: what ``wx.openCard`` can show.
IN_CARD_PACKAGE = (TicketState.CLAIMED, TicketState.REDEEMED)


def cards_in_package(session: Session, ref: OrderRef) -> list[tuple[str, str]] | None:
    """(card id, code) of the order's tickets the caller holds in WeChat, for ``wx.openCard``
    (which takes the real code, not the encrypted one); None if the caller has no such order.
    Only the holder asks, and WeChat shows the same code in the card package."""
    orders = owned_orders(session, ref)
    if not orders:
        return None
    rows = session.execute(
        select(Ticket.card_id, Ticket.code)
        .where(Ticket.order_id.in_([o.id for o in orders]), Ticket.state.in_(IN_CARD_PACKAGE))
        .order_by(Ticket.order_id, Ticket.seq)
    ).all()
    return [(card_id, code) for card_id, code in rows if code]


def card_ticket_even_without_redis(
    store: CredentialStore, appid: str, *, cached: bytes | None = None
) -> StoredCredential:
    """The account's card ticket (``cached``: its cache entry, if just read); with Redis away, the
    one the database holds while it is still valid (signing a claim needs no Redis, only a
    refresh does)."""
    try:
        return store.card_ticket(appid, cached=cached)
    except RedisError:
        stored = store.stored(appid, CredentialKind.CARD_TICKET)
        if stored is None or stored.remaining(clock.now().timestamp()) <= 0:
            raise
        return stored
