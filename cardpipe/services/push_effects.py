"""What WeChat's card event pushes (stored in the inbox by ``POST /wechat/{oa_appid}/events``)
change:

- ``user_get_card`` → the ticket its OuterStr names is claimed (or, if the client callback came
  first, confirmed by WeChat too), with the holder's OA openid and unionid;
- ``user_del_card`` → deleted;
- ``user_consume_card`` → ``wechat_consumes.record_wechat_consume``;
- ``card_pass_check`` / ``card_not_pass_check`` → the event's card audit status;
- anything else is kept in the inbox and marked processed.

Tenant scoping: a push acts only on the event of the official account whose URL it arrived at
(the inbox row's account) whose card it names; a card of any other event is noted as foreign and
changes nothing, whatever code or OuterStr the push carries.

At-least-once safe: :func:`apply_push` takes the inbox row locked (``SKIP LOCKED``) and marks it
processed in the transaction of the guarded updates, so a push applied twice finds it done.

A batch (:func:`apply_pending`) locks the tickets its ``user_get_card`` pushes name and reads them
in the same statement; each push's outcome is decided from those locked rows, in arrival order
(the exact rules of ``claims.confirm_claim``), and the changes are written together: on
PostgreSQL one guarded ``UPDATE`` from one array per column, elsewhere one guarded ``UPDATE``
executed for every changed ticket (a row that no longer matches its guard fails the batch, which
is then applied push by push). Any other push is applied by its handler; when that handler may
change tickets (a gift, a ticket found by code, a delete, a consume) the claims decided so far are
written before it and the locked rows read again after it. Marking the batch processed is one
statement too (``inbox.mark_processed_many``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    String,
    Update,
    any_,
    bindparam,
    case,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.db import unnested
from cardpipe.services import card_audit, claim_ownership, claims, inbox, tenancy
from cardpipe.services.claims import ClaimOutcome, Signal
from cardpipe.services.wechat_consumes import record_wechat_consume
from models import CLAIMABLE_STATES, RECEIVED_STATES, Ticket, TicketState
from models.base import UTCDateTime
from wechat.pushes import (
    CardEvent,
    CardNotPassCheck,
    CardPassCheck,
    UserConsumeCard,
    UserDelCard,
    UserGetCard,
    parse_event,
)


@dataclass
class Handled:
    note: str | None = None
    #: Orders whose poll payload the change affects.
    orders: list[int] = field(default_factory=list)


def _pushed_at(event: CardEvent) -> datetime:
    return datetime.fromtimestamp(event.create_time, UTC)


#: OuterStr is our ticket id; anything that is not a BIGINT cannot name one.
_MAX_TICKET_ID = 2**63 - 1


def _ticket_of(session: Session, event_id: int, code: str, outer_str: str = "") -> tuple[int, int] | None:
    """(ticket id, order id): the ticket of the event OuterStr names (our cardExt's outer_str is
    the ticket id), else the event's ticket with that code."""
    if outer_str.isdigit() and int(outer_str) <= _MAX_TICKET_ID:
        row = session.execute(
            select(Ticket.id, Ticket.order_id).where(Ticket.id == int(outer_str), Ticket.event_id == event_id)
        ).one_or_none()
        if row is not None:
            return row.id, row.order_id
    row = session.execute(
        select(Ticket.id, Ticket.order_id).where(Ticket.event_id == event_id, Ticket.code == code)
    ).one_or_none()
    return None if row is None else (row.id, row.order_id)


def _user_get_card(session: Session, event: UserGetCard, event_id: int) -> Handled:
    if event.is_give_by_friend:
        return Handled(note="received as a gift: not a claim of one of our tickets")
    found = _ticket_of(session, event_id, event.code, event.outer_str)
    if found is None:
        return Handled(note=f"no ticket of card {event.card_id} with OuterStr {event.outer_str!r} or this code")
    ticket_id, order_id = found
    outcome = claims.confirm_claim(
        session,
        ticket_id=ticket_id,
        card_id=event.card_id,
        code=event.code,
        signal=Signal.WECHAT,
        oa_openid=event.from_user,
        unionid=event.union_id or None,
    )
    if outcome == ClaimOutcome.UNMATCHED:
        return Handled(note=f"ticket {ticket_id}: UserCardCode is not the ticket's code")
    return Handled(orders=[order_id])


def _user_del_card(session: Session, event: UserDelCard, event_id: int) -> Handled:
    orders = claims.delete(session, event_id=event_id, code=event.code)
    return Handled(orders=orders) if orders else Handled(note="no deletable ticket with this card and code")


def _user_consume_card(session: Session, event: UserConsumeCard, event_id: int) -> Handled:
    record_wechat_consume(
        session,
        event_id=event_id,
        card_id=event.card_id,
        code=event.code,
        consume_source=event.consume_source,
        at=_pushed_at(event),
    )
    found = _ticket_of(session, event_id, event.code)
    return Handled(orders=[] if found is None else [found[1]])


def _card_verdict(session: Session, event: CardEvent, event_id: int, status: str) -> Handled:
    changed = card_audit.record_verdict(session, event_id=event_id, status=status, at=_pushed_at(event))
    return Handled() if changed else Handled(note="a later verdict on this card is recorded")


#: Acts on one push, given the session and the event (organiser's) its card belongs to.
Handler = Callable[[Session, int], Handled]


def _handler_of(event: CardEvent) -> Handler | None:
    """What acting on ``event`` takes (None: a push we only store)."""
    match event:
        case UserGetCard():
            return lambda session, event_id: _user_get_card(session, event, event_id)
        case UserDelCard():
            return lambda session, event_id: _user_del_card(session, event, event_id)
        case UserConsumeCard():
            return lambda session, event_id: _user_consume_card(session, event, event_id)
        case CardPassCheck():
            return lambda session, event_id: _card_verdict(session, event, event_id, card_audit.VERIFY_OK)
        case CardNotPassCheck():
            return lambda session, event_id: _card_verdict(session, event, event_id, card_audit.VERIFY_FAIL)
    return None


#: (official account id, card id) → the event of that account with that card (None: none).
EventsOfCards = dict[tuple[int | None, str], int | None]


def handle(
    session: Session, event: CardEvent, *, official_account_id: int | None, events_of_cards: EventsOfCards | None = None
) -> Handled:
    """Act on a push that arrived at ``official_account_id``'s URL: only on the event of that
    account whose card the push names; a card of anyone else's is noted as foreign.
    ``events_of_cards`` remembers the lookups within one transaction (a batch of pushes)."""
    handler = _handler_of(event)
    if handler is None:
        return Handled()
    known = {} if events_of_cards is None else events_of_cards
    key = (official_account_id, event.card_id)
    if key not in known:
        known[key] = tenancy.event_of_card(session, official_account_id=official_account_id, card_id=event.card_id)
    event_id = known[key]
    if event_id is None:
        return Handled(note=tenancy.foreign_card_note(event.card_id))
    return handler(session, event_id)


@dataclass(frozen=True, slots=True)
class Drained:
    #: The inbox rows applied and marked processed.
    inbox_ids: list[int]
    #: The poll records the changes made stale.
    cache_keys: list[str]


def locked_tickets(session: Session, *where: ColumnElement[bool]) -> dict[int, dict[str, Any]]:
    """Lock the tickets a batch is about to change, in id order, before its first change (batches
    and one-row transactions, which change their tickets in id order, then never wait on each
    other in a circle), and read what a batch decides on: ticket id → its columns."""
    rows = session.execute(
        select(
            Ticket.id,
            Ticket.order_id,
            Ticket.event_id,
            Ticket.card_id,
            Ticket.code,
            Ticket.state,
            Ticket.confirmed_by_wechat,
            Ticket.confirmed_by_client,
        )
        .where(*where)
        .order_by(Ticket.id)
        .with_for_update()
    )
    return {row.id: row._asdict() for row in rows}


def apply_pending(session: Session, *, limit: int, max_attempts: int) -> Drained:
    """Apply up to ``limit`` unprocessed pushes (oldest first, rows other transactions hold
    skipped) and mark them processed, all in this transaction. A push that raises fails the
    whole batch: the caller then applies the rows one by one (:func:`apply_push`)."""
    notes: dict[int, str | None] = {}
    orders: set[int] = set()
    events_of_cards: EventsOfCards = {}
    taken = [
        (inbox_id, parse_event(payload), official_account_id)
        for inbox_id, payload, official_account_id in inbox.take_pushes(session, limit=limit, max_attempts=max_attempts)
    ]
    named = {
        int(event.outer_str)
        for _, event, _ in taken
        if isinstance(event, UserGetCard) and _names_ticket(event.outer_str)
    }
    got_cards = _GetCardBatch(session, named)
    for inbox_id, event, official_account_id in taken:
        handled = None
        if isinstance(event, UserGetCard):
            handled = got_cards.claim(event, official_account_id, events_of_cards)
        if handled is None and isinstance(event, _CHANGING_TICKETS):
            got_cards.write()
            handled = handle(session, event, official_account_id=official_account_id, events_of_cards=events_of_cards)
            got_cards.forget()
        elif handled is None:
            handled = handle(session, event, official_account_id=official_account_id, events_of_cards=events_of_cards)
        notes[inbox_id] = handled.note
        orders.update(handled.orders)
    got_cards.write()
    inbox.mark_processed_many(session, notes)
    return Drained(list(notes), claim_ownership.cache_keys(session, orders))


#: The pushes whose handler may change tickets: the claims decided so far are written before it,
#: and the locked rows read again after it.
_CHANGING_TICKETS = (UserGetCard, UserDelCard, UserConsumeCard)


def _names_ticket(outer_str: str) -> bool:
    return outer_str.isdigit() and int(outer_str) <= _MAX_TICKET_ID


_T = Ticket.__table__
#: What differs between the tickets a batch confirms, and each one's type.
_PER_TICKET = {
    "b_id": BigInteger,
    "b_card_id": String,
    "b_code": String,
    "b_old_state": String,
    "b_state": String,
    "b_claims": Boolean,
    "b_oa_openid": String,
    "b_unionid": String,
}


def _confirm_by_wechat(given: Callable[[str], Any]) -> Update:
    """The user_get_card of the tickets ``given`` names (column → its value), guarded exactly as
    ``claims.confirm_claim``'s updates are."""
    now = bindparam("b_now", type_=UTCDateTime)
    return (
        update(_T)
        .where(
            _T.c.id == given("b_id"),
            _T.c.card_id == given("b_card_id"),
            or_(_T.c.code == given("b_code"), _T.c.code.is_(None)),
            _T.c.state == given("b_old_state"),
            _T.c.confirmed_by_wechat.is_(False),
        )
        .values(
            state=given("b_state"),
            confirmed_by_wechat=True,
            code=func.coalesce(_T.c.code, given("b_code")),
            confirmed_at=now,
            updated_at=now,
            claimed_at=case((given("b_claims"), now), else_=func.coalesce(_T.c.claimed_at, now)),
            oa_openid=func.coalesce(given("b_oa_openid"), _T.c.oa_openid),
            unionid=func.coalesce(given("b_unionid"), _T.c.unionid),
        )
    )


#: One ticket (executed for every ticket of a batch).
_CONFIRM_BY_WECHAT = _confirm_by_wechat(lambda name: bindparam(name, type_=_PER_TICKET[name]))
_CONFIRMED = select(*unnested(_PER_TICKET)).subquery("confirmed")
#: Every ticket of a batch at once, from one array per column (PostgreSQL).
_CONFIRM_ALL_BY_WECHAT = _confirm_by_wechat(lambda name: _CONFIRMED.c[name])


def _one_of(session: Session, ticket_ids: list[int]) -> ColumnElement[bool]:
    """``tickets.id IN ticket_ids``; on PostgreSQL ``= ANY(:array)``: one parameter, so the
    statement's text is the same whatever the batch (psycopg caches its parsing)."""
    if session.get_bind().dialect.name != "postgresql":
        return Ticket.id.in_(ticket_ids)
    return Ticket.id == any_(bindparam("ticket_ids", ticket_ids, type_=postgresql.ARRAY(BigInteger)))


class _GetCardBatch:
    """The ``user_get_card`` pushes of a batch: decided on the locked ticket rows, written together."""

    def __init__(self, session: Session, ticket_ids: Collection[int]) -> None:
        self.session = session
        self.ticket_ids = sorted(ticket_ids)
        self.rows: dict[int, dict[str, Any]] | None = None
        self.changes: dict[int, dict[str, Any]] = {}
        self._read()

    def _read(self) -> None:
        self.rows = locked_tickets(self.session, _one_of(self.session, self.ticket_ids)) if self.ticket_ids else {}

    def forget(self) -> None:
        """Another handler may have changed the tickets: read them again."""
        self._read()

    def claim(self, event: UserGetCard, official_account_id: int | None, known: EventsOfCards) -> Handled | None:
        """The push's outcome, decided on the locked row of the ticket its OuterStr names; None
        for a push :func:`handle` must apply (a gift, a foreign card, a ticket found by code)."""
        if event.is_give_by_friend or not _names_ticket(event.outer_str):
            return None
        key = (official_account_id, event.card_id)
        if key not in known:
            known[key] = tenancy.event_of_card(
                self.session, official_account_id=official_account_id, card_id=event.card_id
            )
        event_id = known[key]
        assert self.rows is not None
        row = self.rows.get(int(event.outer_str))
        if event_id is None or row is None or row["event_id"] != event_id:
            return None
        ticket_id = row["id"]
        if row["card_id"] != event.card_id or row["code"] not in (None, event.code):
            return Handled(note=f"ticket {ticket_id}: UserCardCode is not the ticket's code")
        if row["state"] in CLAIMABLE_STATES:
            claims_it = True
        elif row["state"] in RECEIVED_STATES and not row["confirmed_by_wechat"]:
            claims_it = False
        elif row["state"] in RECEIVED_STATES:
            return Handled(orders=[row["order_id"]])  # this signal had already confirmed it
        else:
            return Handled(note=f"ticket {ticket_id}: UserCardCode is not the ticket's code")
        self.changes[ticket_id] = {
            "b_id": ticket_id,
            "b_card_id": event.card_id,
            "b_code": event.code,
            "b_old_state": row["state"],
            "b_state": TicketState.CLAIMED if claims_it else row["state"],
            "b_claims": claims_it,
            "b_oa_openid": event.from_user or None,
            "b_unionid": event.union_id or None,
        }
        row.update(state=self.changes[ticket_id]["b_state"], confirmed_by_wechat=True, code=row["code"] or event.code)
        return Handled(orders=[row["order_id"]])

    def write(self) -> None:
        """Write the claims decided so far: every changed ticket must still match its guard."""
        if not self.changes:
            return
        now = clock.now()
        changes, self.changes = list(self.changes.values()), {}
        connection = self.session.connection()
        if connection.dialect.name == "postgresql":
            arrays: dict[str, Any] = {name: [change[name] for change in changes] for name in _PER_TICKET}
            changed = connection.execute(_CONFIRM_ALL_BY_WECHAT, {**arrays, "b_now": now}).rowcount
        else:
            changed = connection.execute(_CONFIRM_BY_WECHAT, [{**change, "b_now": now} for change in changes]).rowcount
        if changed != len(changes):
            raise RuntimeError(f"{len(changes) - changed} locked tickets changed under a batch of pushes")


def apply_push(session: Session, inbox_id: int) -> list[str] | None:
    """Apply the unprocessed push ``inbox_id`` and mark it processed; the poll records the change
    made stale, or None when the row is done or being done elsewhere."""
    taken = inbox.take_push(session, inbox_id)
    if taken is None:
        return None
    payload, official_account_id = taken
    handled = handle(session, parse_event(payload), official_account_id=official_account_id)
    inbox.mark_processed(session, inbox_id, note=handled.note)
    return claim_ownership.cache_keys(session, handled.orders)
