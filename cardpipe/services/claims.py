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

from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import Session

from cardpipe.credentials import StoredCredential
from cardpipe.services.claim_cache import CachedClaim, record_key
from cardpipe.services.resign import resign_tickets
from cardpipe.services.ticket_signing import sign_card_ext
from models import Event, MiniProgram, OfficialAccount, Order, Ticket, TicketState

#: What a pending poll tells the client to wait before polling again.
RETRY_AFTER_MS = 1_000
#: A pending record lives as long as the retry hint: the issue worker does not invalidate it.
PENDING_TTL_MS = RETRY_AFTER_MS
SETTLED_TTL_MS = 600_000

CLAIMABLE = (TicketState.READY, TicketState.SERVED)
#: States a ticket reaches only after WeChat gave it to someone: a late signal just records itself.
PAST_CLAIM = (TicketState.CLAIMED, TicketState.REDEEMED, TicketState.DELETED, TicketState.REVOKED)
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


def owned_orders(session: Session, ref: OrderRef) -> list[OwnedOrder]:
    """The caller's orders with that number (one, unless two events of the mini program reuse it)."""
    rows = session.execute(
        select(Order.id, Order.event_id, Order.ticket_count, OfficialAccount.appid, OfficialAccount.id)
        .join(Event, Event.id == Order.event_id)
        .join(MiniProgram, MiniProgram.id == Event.mini_program_id)
        .join(OfficialAccount, OfficialAccount.id == Event.official_account_id)
        .where(MiniProgram.appid == ref.mp_appid, Order.order_no == ref.order_no, Order.mp_openid == ref.openid)
        .order_by(Order.id)
    ).all()
    return [OwnedOrder(*row) for row in rows]


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


def build_claim(
    session: Session, ref: OrderRef, *, card_ticket: Callable[[str], StoredCredential]
) -> BuiltClaim | None:
    """The poll answer for ``ref`` from the database, or None if the caller has no such order.
    Outstanding tickets signed by an older card ticket are re-signed first and ready ones become
    served, so what is returned is what may be cached and handed out."""
    orders = owned_orders(session, ref)
    if not orders:
        return None
    oa_appid = orders[0].oa_appid
    to_issue = orders_to_issue(session, orders)
    if to_issue:
        body = {"order_no": ref.order_no, "status": ClaimStatus.PENDING, "retry_after_ms": RETRY_AFTER_MS}
        return BuiltClaim(CachedClaim.of(body, ticket_version=0, oa_appid=oa_appid), PENDING_TTL_MS, to_issue)

    order_ids = [o.id for o in orders]
    outstanding = session.execute(
        select(Ticket.id, Ticket.state, Ticket.ticket_version).where(
            Ticket.order_id.in_(order_ids), Ticket.state.in_(CLAIMABLE)
        )
    ).all()
    if outstanding:
        current = card_ticket(oa_appid)
        stale = [ticket_id for ticket_id, _, version in outstanding if version < current.version]
        if stale:
            resign_tickets(session, stale, api_ticket=current.value, version=current.version)
        serve(session, [ticket_id for ticket_id, state, _ in outstanding if state == TicketState.READY])

    card_list = session.execute(
        select(Ticket.card_id, Ticket.card_ext, Ticket.ticket_version)
        .where(Ticket.order_id.in_(order_ids), Ticket.state.in_(CLAIMABLE))
        .order_by(Ticket.order_id, Ticket.seq)
    ).all()
    if not card_list:
        body = {"order_no": ref.order_no, "status": ClaimStatus.DONE, "cardList": []}
        return BuiltClaim(CachedClaim.of(body, ticket_version=0, oa_appid=oa_appid), SETTLED_TTL_MS, [])
    body = {
        "order_no": ref.order_no,
        "status": ClaimStatus.READY,
        "cardList": [{"cardId": card_id, "cardExt": card_ext} for card_id, card_ext, _ in card_list],
    }
    oldest = min(version for _, _, version in card_list)
    return BuiltClaim(CachedClaim.of(body, ticket_version=oldest, oa_appid=oa_appid), SETTLED_TTL_MS, [])


def serve(session: Session, ticket_ids: Collection[int]) -> int:
    """ready → served; returns how many moved."""
    if not ticket_ids:
        return 0
    now = datetime.now(UTC)
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
    now = datetime.now(UTC)
    values: dict[str, object] = {flag.key: True, "code": func.coalesce(Ticket.code, code), "updated_at": now}
    if oa_openid:
        values["oa_openid"] = oa_openid
    if unionid:
        values["unionid"] = unionid

    def guarded(*where: ColumnElement[bool], **extra: object) -> int:
        statement = update(Ticket).where(*matches, *where).values({**values, **extra})
        return session.execute(statement.execution_options(synchronize_session=False)).rowcount

    if guarded(Ticket.state.in_(CLAIMABLE), state=TicketState.CLAIMED, claimed_at=now):
        return ClaimOutcome.CLAIMED
    if guarded(Ticket.state.in_(PAST_CLAIM), flag.is_(False), claimed_at=func.coalesce(Ticket.claimed_at, now)):
        return ClaimOutcome.CONFIRMED
    already = session.execute(select(flag).where(*matches, Ticket.state.in_(PAST_CLAIM))).scalar_one_or_none()
    return ClaimOutcome.DUPLICATE if already else ClaimOutcome.UNMATCHED


def delete(session: Session, *, card_id: str, code: str) -> list[int]:
    """The user deleted the card in WeChat: → deleted. Returns the orders whose ticket moved."""
    now = datetime.now(UTC)
    result = session.execute(
        update(Ticket)
        .where(Ticket.card_id == card_id, Ticket.code == code, Ticket.state.in_(DELETABLE))
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
            Ticket.id.in_(spent), Ticket.state.in_(CLAIMABLE)
        )
    ).all()
    orders: list[int] = []
    for ticket_id, order_id, card_id, code, nonce in rows:
        if nonce != spent[ticket_id]:
            continue
        signed = sign_card_ext(api_ticket=api_ticket, card_id=card_id, code=code, outer_str=str(ticket_id))
        now = datetime.now(UTC)
        result = session.execute(
            update(Ticket)
            .where(Ticket.id == ticket_id, Ticket.nonce == nonce, Ticket.state.in_(CLAIMABLE))
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
            Ticket.order_id.in_(order_ids), Ticket.state.in_(CLAIMABLE), Ticket.nonce.is_not(None)
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
