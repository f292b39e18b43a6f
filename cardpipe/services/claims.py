"""The claim of an order: the payload the Mini Program polls for, and the ticket transitions that
the client callback and WeChat's pushes cause.

State machine (architecture page)::

    ready ──serve──▶ served ──client ok / user_get_card──▶ claimed ──user_del_card──▶ deleted

``serve`` happens once, when a poll payload is first built for the ticket (a cache fill), so the
common poll — a cache hit — writes nothing. Whichever of the client callback and ``user_get_card``
comes first claims the ticket; the other only records its confirmation flag. Every change is one
guarded ``UPDATE … WHERE state IN (…)``: a repeated or late signal matches no row and changes
nothing, in any order.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from redis.exceptions import RedisError
from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.credentials import CredentialStore, StoredCredential
from cardpipe.services.claim_cache import CachedClaim, record_key
from cardpipe.services.resign import resign_tickets
from cardpipe.services.ticket_signing import sign_card_ext
from models import (
    CLAIMABLE_STATES,
    RECEIVED_STATES,
    CredentialKind,
    Event,
    MiniProgram,
    OfficialAccount,
    Order,
    Ticket,
    TicketState,
)

#: What a pending poll tells the client to wait before polling again.
RETRY_AFTER_MS = 1_000
#: A pending record lives as long as the retry hint: the issue worker does not invalidate it.
PENDING_TTL_MS = RETRY_AFTER_MS
SETTLED_TTL_MS = 600_000

#: user_del_card may overtake user_get_card's processing, so a served ticket can go straight there.
DELETABLE = (TicketState.READY, TicketState.SERVED, TicketState.CLAIMED)


class ClaimStatus(StrEnum):
    #: Some ticket is not issued yet (just-in-time issue queued): poll again after the hint.
    PENDING = "pending"
    #: ``cardList`` holds every ticket still to add, ready for ``wx.addCard``.
    READY = "ready"
    #: Nothing left to add: every ticket is claimed (or redeemed, deleted, revoked).
    DONE = "done"


class Signal(StrEnum):
    CLIENT = "client"
    WECHAT = "wechat"


class ClaimOutcome(StrEnum):
    #: ready/served → claimed: this signal came first.
    CLAIMED = "claimed"
    #: Already claimed (or later) by the other signal: this one's confirmation is recorded.
    CONFIRMED = "confirmed"
    #: This signal had already confirmed the ticket: nothing changed.
    DUPLICATE = "duplicate"
    #: No issued ticket has that id, card and code.
    UNMATCHED = "unmatched"


@dataclass(frozen=True, slots=True)
class OrderRef:
    """How a client names its order: the order number, within its session's mini program and
    MP openid. Ownership is the order's buyer openid: anyone else's order is simply not found."""

    mp_appid: str
    openid: str
    order_no: str

    @property
    def cache_key(self) -> str:
        return record_key(self.mp_appid, self.openid, self.order_no)


@dataclass(frozen=True, slots=True)
class OwnedOrder:
    id: int
    order_no: str
    event_id: int
    ticket_count: int
    oa_appid: str
    official_account_id: int


@dataclass(frozen=True, slots=True)
class BuiltClaim:
    claim: CachedClaim
    ttl_ms: int
    #: (event_id, order_id) of orders whose tickets are not all issued: the caller queues them.
    to_issue: list[tuple[int, int]]


def owned_orders(session: Session, *refs: OrderRef) -> list[OwnedOrder]:
    """The caller's orders with those numbers (one per number, unless two events of the mini
    program reuse it). Every ref is the same caller's (one session's mini program and openid)."""
    callers = {(ref.mp_appid, ref.openid) for ref in refs}
    if len(callers) != 1:
        raise ValueError("owned_orders takes the refs of exactly one caller")
    ((mp_appid, openid),) = callers
    rows = session.execute(
        select(Order.id, Order.order_no, Order.event_id, Order.ticket_count, OfficialAccount.appid, OfficialAccount.id)
        .join(Event, Event.id == Order.event_id)
        .join(MiniProgram, MiniProgram.id == Event.mini_program_id)
        .join(OfficialAccount, OfficialAccount.id == Event.official_account_id)
        .where(
            MiniProgram.appid == mp_appid,
            Order.order_no.in_({ref.order_no for ref in refs}),
            Order.mp_openid == openid,
        )
        .order_by(Order.id)
    ).all()
    return [OwnedOrder(*row) for row in rows]


class UnknownOrders(LookupError):
    """The caller has no order with some of the numbers given: nothing was done."""

    def __init__(self, order_nos: Collection[str]) -> None:
        super().__init__("no such order: " + ", ".join(sorted(order_nos)))
        self.order_nos = sorted(order_nos)


def all_owned_orders(session: Session, refs: Sequence[OrderRef]) -> list[OwnedOrder]:
    """:func:`owned_orders`, all or nothing: raises :class:`UnknownOrders` if any is missing."""
    owned = owned_orders(session, *refs)
    missing = {ref.order_no for ref in refs} - {order.order_no for order in owned}
    if missing:
        raise UnknownOrders(missing)
    return owned


def orders_to_issue(session: Session, orders: list[OwnedOrder]) -> list[tuple[int, int]]:
    """(event_id, order_id) of the orders with fewer issued tickets than they are owed."""
    issued = Counter(
        session.scalars(
            select(Ticket.order_id).where(
                Ticket.order_id.in_([o.id for o in orders]),
                Ticket.state != TicketState.PENDING,
                Ticket.card_ext.is_not(None),
                Ticket.ticket_version.is_not(None),
            )
        )
    )
    return [(o.event_id, o.id) for o in orders if issued[o.id] < o.ticket_count]


def build_claims(
    session: Session, refs: Sequence[OrderRef], *, card_ticket: Callable[[str], StoredCredential]
) -> dict[str, BuiltClaim]:
    """The poll answers of one caller's orders from the database, by order number. Outstanding
    tickets signed by an older card ticket are re-signed first and ready ones become served, so
    what is returned is what may be cached and handed out. A handful of queries whatever the
    number of orders. All or nothing: raises :class:`UnknownOrders`, changing nothing, if the
    caller lacks any of the orders."""
    owned = all_owned_orders(session, refs)
    groups: dict[str, list[OwnedOrder]] = defaultdict(list)
    for order in owned:
        groups[order.order_no].append(order)
    pending = {order_id for _, order_id in orders_to_issue(session, owned)}
    built: dict[str, BuiltClaim] = {}
    for order_no, group in groups.items():
        to_issue = [(o.event_id, o.id) for o in group if o.id in pending]
        if to_issue:
            body = {"order_no": order_no, "status": ClaimStatus.PENDING, "retry_after_ms": RETRY_AFTER_MS}
            claim = CachedClaim.of(body, ticket_version=0, oa_appid=group[0].oa_appid)
            built[order_no] = BuiltClaim(claim, PENDING_TTL_MS, to_issue)
    issued = {o.id: o for o in owned if o.order_no not in built}
    cards = _claimable_cards(session, issued, card_ticket)
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


def _claimable_cards(
    session: Session, orders: Mapping[int, OwnedOrder], card_ticket: Callable[[str], StoredCredential]
) -> dict[int, list[tuple[str, str, int]]]:
    """order id → (card id, cardExt, ticket version) of its outstanding tickets, in seat order,
    after re-signing those an older card ticket signed and serving the ready ones."""
    if not orders:
        return {}
    outstanding = session.execute(
        select(Ticket.id, Ticket.order_id, Ticket.state, Ticket.ticket_version).where(
            Ticket.order_id.in_(orders), Ticket.state.in_(CLAIMABLE_STATES)
        )
    ).all()
    if not outstanding:
        return {}
    # Every card ticket before the first write: no write lock is held across a credential read.
    currents = {oa: card_ticket(oa) for oa in {orders[order_id].oa_appid for _, order_id, _, _ in outstanding}}
    for oa_appid, current in currents.items():
        stale = [
            ticket_id
            for ticket_id, order_id, _, version in outstanding
            if orders[order_id].oa_appid == oa_appid and version < current.version
        ]
        if stale:
            resign_tickets(session, stale, api_ticket=current.value, version=current.version)
    serve(session, [ticket_id for ticket_id, _, state, _ in outstanding if state == TicketState.READY])
    rows = session.execute(
        select(Ticket.order_id, Ticket.card_id, Ticket.card_ext, Ticket.ticket_version)
        .where(Ticket.order_id.in_(orders), Ticket.state.in_(CLAIMABLE_STATES))
        .order_by(Ticket.order_id, Ticket.seq)
    ).all()
    cards: dict[int, list[tuple[str, str, int]]] = defaultdict(list)
    for order_id, card_id, card_ext, version in rows:
        cards[order_id].append((card_id, card_ext, version))
    return cards


def serve(session: Session, ticket_ids: Collection[int]) -> int:
    """ready → served; returns how many moved."""
    if not ticket_ids:
        return 0
    now = clock.now()
    result = session.execute(
        update(Ticket)
        .where(Ticket.id.in_(ticket_ids), Ticket.state == TicketState.READY)
        .values(state=TicketState.SERVED, served_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def confirm_claim(
    session: Session,
    *,
    ticket_id: int,
    card_id: str,
    code: str,
    signal: Signal,
    oa_openid: str | None = None,
    unionid: str | None = None,
) -> ClaimOutcome:
    """Record that ``signal`` saw ticket ``ticket_id`` (card ``card_id``, code ``code``) reach the
    user. A deposit-mode ticket learns its code here; WeChat's push also tells the holder's OA
    openid and unionid (recorded whatever the state)."""
    flag = Ticket.confirmed_by_client if signal == Signal.CLIENT else Ticket.confirmed_by_wechat
    matches: list[ColumnElement[bool]] = [
        Ticket.id == ticket_id,
        Ticket.card_id == card_id,
        or_(Ticket.code == code, Ticket.code.is_(None)),
    ]
    now = clock.now()
    values: dict[str, object] = {flag.key: True, "code": func.coalesce(Ticket.code, code), "updated_at": now}
    if signal == Signal.WECHAT:
        values["confirmed_at"] = now
    if oa_openid:
        values["oa_openid"] = oa_openid
    if unionid:
        values["unionid"] = unionid

    def guarded(*where: ColumnElement[bool], **extra: object) -> int:
        statement = update(Ticket).where(*matches, *where).values({**values, **extra})
        return session.execute(statement.execution_options(synchronize_session=False)).rowcount

    if guarded(Ticket.state.in_(CLAIMABLE_STATES), state=TicketState.CLAIMED, claimed_at=now):
        return ClaimOutcome.CLAIMED
    if guarded(Ticket.state.in_(RECEIVED_STATES), flag.is_(False), claimed_at=func.coalesce(Ticket.claimed_at, now)):
        return ClaimOutcome.CONFIRMED
    already = session.execute(select(flag).where(*matches, Ticket.state.in_(RECEIVED_STATES))).scalar_one_or_none()
    return ClaimOutcome.DUPLICATE if already else ClaimOutcome.UNMATCHED


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


def record_client_report(session: Session, *, ticket_id: int, card_id: str) -> ClaimOutcome:
    """The client reports a ticket that WeChat's ``user_get_card`` already confirmed: its flag is
    recorded (CONFIRMED), or was already (DUPLICATE); a ticket of another card is UNMATCHED."""
    now = clock.now()
    matches = (Ticket.id == ticket_id, Ticket.card_id == card_id, Ticket.confirmed_by_wechat.is_(True))
    changed = session.execute(
        update(Ticket)
        .where(*matches, Ticket.state.in_(RECEIVED_STATES), Ticket.confirmed_by_client.is_(False))
        .values(confirmed_by_client=True, updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed:
        return ClaimOutcome.CONFIRMED
    known = session.execute(select(Ticket.id).where(*matches)).scalar_one_or_none()
    return ClaimOutcome.DUPLICATE if known is not None else ClaimOutcome.UNMATCHED


def delete(session: Session, *, event_id: int, code: str) -> list[int]:
    """The user deleted the event's card with ``code`` in WeChat: → deleted. Returns the orders
    whose ticket moved."""
    now = clock.now()
    result = session.execute(
        update(Ticket)
        .where(Ticket.event_id == event_id, Ticket.code == code, Ticket.state.in_(DELETABLE))
        .values(state=TicketState.DELETED, deleted_at=now, updated_at=now)
        .returning(Ticket.order_id)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars())


def resign_spent(session: Session, spent: Mapping[int, str], *, api_ticket: str, version: int) -> list[int]:
    """A fresh nonce and timestamp for each outstanding ticket whose current nonce is the one
    given (WeChat refuses a (timestamp, nonce) pair a cancelled or failed addCard used). Guarded by
    that nonce, so repeating it, or racing a rotation re-sign, re-signs nothing twice. Returns
    the orders of the tickets re-signed."""
    if not spent:
        return []
    rows = session.execute(
        select(Ticket.id, Ticket.order_id, Ticket.card_id, Ticket.code, Ticket.nonce).where(
            Ticket.id.in_(spent), Ticket.state.in_(CLAIMABLE_STATES)
        )
    ).all()
    orders: list[int] = []
    for ticket_id, order_id, card_id, code, nonce in rows:
        if nonce != spent[ticket_id]:
            continue
        signed = sign_card_ext(api_ticket=api_ticket, card_id=card_id, code=code, outer_str=str(ticket_id))
        now = clock.now()
        result = session.execute(
            update(Ticket)
            .where(Ticket.id == ticket_id, Ticket.nonce == nonce, Ticket.state.in_(CLAIMABLE_STATES))
            .values(
                card_ext=signed.card_ext,
                nonce=signed.nonce,
                timestamp=signed.timestamp,
                ticket_version=version,
                signed_at=now,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:
            orders.append(order_id)
    return orders


def outstanding_nonces(session: Session, order_ids: Collection[int]) -> dict[int, str]:
    """ticket id → current nonce of the orders' outstanding tickets (what a client holds now)."""
    rows = session.execute(
        select(Ticket.id, Ticket.nonce).where(
            Ticket.order_id.in_(order_ids), Ticket.state.in_(CLAIMABLE_STATES), Ticket.nonce.is_not(None)
        )
    ).all()
    return {ticket_id: nonce for ticket_id, nonce in rows}


def cache_keys(session: Session, order_ids: Collection[int]) -> list[str]:
    """The poll records showing these orders (to invalidate after a change)."""
    if not order_ids:
        return []
    rows = session.execute(
        select(MiniProgram.appid, Order.mp_openid, Order.order_no)
        .join(Event, Event.id == Order.event_id)
        .join(MiniProgram, MiniProgram.id == Event.mini_program_id)
        .where(Order.id.in_(set(order_ids)))
    ).all()
    return [record_key(*row) for row in rows]


def card_ticket_even_without_redis(store: CredentialStore, appid: str) -> StoredCredential:
    """The account's card ticket; with Redis away, the one the database holds while it is still
    valid (signing a claim needs no Redis, only a refresh does)."""
    try:
        return store.card_ticket(appid)
    except RedisError:
        stored = store.stored(appid, CredentialKind.CARD_TICKET)
        if stored is None or stored.remaining(clock.now().timestamp()) <= 0:
            raise
        return stored
