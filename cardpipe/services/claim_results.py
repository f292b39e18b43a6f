"""What ``wx.addCard`` told the Mini Program, posted back by it: accepted into the inbox, then
applied by the claims worker.

Accepting stores the result (deduplicated on its content) and, when the user cancelled or an
item failed, re-signs the tickets whose (timestamp, nonce) that attempt spent — right away, in
the request, so the user's immediate retry gets a payload WeChat will take. Applying decrypts
each returned code (``code/decrypt``), checks it is the ticket's code, and claims the ticket.

Which ticket an item is comes from the ``outer_str`` of its echoed cardExt (the ticket id, by the
project's convention), and only the caller's own tickets count. Codes are not trusted: only a
code WeChat decrypts to the ticket's own code claims it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, Field
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from cardpipe.credentials import StoredCredential
from cardpipe.services import claim_ownership, claims, inbox, resign
from cardpipe.services.claim_cache import record_key
from cardpipe.services.claim_ownership import OrderRef, OrderTicket
from cardpipe.services.claims import ClaimOutcome, Signal
from models import CLAIMABLE_STATES, RECEIVED_STATES, InboxSource, Ticket
from wechat.errors import BusinessError

ADD_CARD_OK = "addCard:ok"
CLIENT_RESULT_KIND = "add_card_result"


class AddCardItem(BaseModel):
    """One entry of ``wx.addCard``'s ``cardList`` as the Mini Program received it (on failure,
    the entry it passed in, if it sends it: that lets the server re-sign exactly that one)."""

    cardId: str = Field(min_length=1, max_length=32)
    cardExt: str = Field(min_length=2, max_length=2048, description="the cardExt JSON string, echoed")
    code: str | None = Field(default=None, max_length=512, description="the *encrypted* code (success only)")
    isSuccess: bool | None = None


class AddCardResult(BaseModel):
    """What ``wx.addCard`` returned: ``errMsg`` is ``addCard:ok`` or ``addCard:fail <reason>``
    (``addCard:fail cancel`` when the user backed out)."""

    errMsg: str = Field(min_length=1, max_length=256, examples=["addCard:ok", "addCard:fail cancel"])
    cardList: list[AddCardItem] = Field(default_factory=list, max_length=100)

    @property
    def ok(self) -> bool:
        return self.errMsg == ADD_CARD_OK


class StoredResult(BaseModel):
    """The inbox payload: the result plus who posted it and what its attempt spent."""

    mp_appid: str
    openid: str
    #: The orders the client asked for in the claim that led to this result (one, or a batch).
    order_nos: list[str]
    oa_appid: str
    order_ids: list[int]
    result: AddCardResult
    #: ticket id → the nonce a failed or cancelled attempt used (to be replaced).
    spent: dict[int, str]

    @property
    def cache_keys(self) -> list[str]:
        """The poll records of the orders this result is about."""
        return [record_key(self.mp_appid, self.openid, order_no) for order_no in self.order_nos]


@dataclass(frozen=True, slots=True)
class Accepted:
    inbox_id: int | None
    duplicate: bool
    #: Orders whose tickets were re-signed now (their poll records must be invalidated).
    resigned_orders: list[int]


@dataclass
class Applied:
    outcomes: dict[int, ClaimOutcome] = field(default_factory=dict)
    orders: set[int] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def _ext_ticket(card_ext: str) -> tuple[int, str] | None:
    """(ticket id, nonce) named by an echoed cardExt, if it is one of ours."""
    try:
        ext = json.loads(card_ext)
        return int(ext["outer_str"]), str(ext["nonce_str"])
    except (ValueError, TypeError, KeyError):
        return None


def spent_nonces(result: AddCardResult, outstanding: dict[int, str]) -> dict[int, str]:
    """The caller's outstanding tickets this attempt spent: the failed items it names, or — a
    failure that names none — every ticket it could have been showing."""
    failed = [item for item in result.cardList if not (result.ok and item.isSuccess)]
    if not result.ok and not result.cardList:
        return dict(outstanding)
    named = (_ext_ticket(item.cardExt) for item in failed)
    return {ticket_id: nonce for ticket_id, nonce in filter(None, named) if ticket_id in outstanding}


def outstanding_nonces(tickets: Mapping[int, list[OrderTicket]]) -> dict[int, str]:
    """ticket id → current nonce of the outstanding tickets (ready or served, signed: what a
    client holds now) among ``tickets`` (order id → its tickets)."""
    return {
        t.id: t.nonce
        for order_tickets in tickets.values()
        for t in order_tickets
        if t.state in CLAIMABLE_STATES and t.nonce is not None
    }


def spends_nothing(result: AddCardResult) -> bool:
    """A success of every item: :func:`spent_nonces` is empty whatever is outstanding."""
    return result.ok and all(item.isSuccess for item in result.cardList)


def dedupe_key(refs: Sequence[OrderRef], result: AddCardResult, spent: dict[int, str]) -> str:
    """Same caller, orders, result and spent nonces ⇒ the same delivery. A bare failure (no
    cardList) is told apart by the nonces it spent, so the user's second cancel is not a repeat."""
    caller = [refs[0].mp_appid, refs[0].openid, sorted({ref.order_no for ref in refs})]
    material = json.dumps([*caller, result.model_dump(mode="json"), sorted(spent.items())], separators=(",", ":"))
    return "client:" + hashlib.sha256(material.encode("utf-8")).hexdigest()


def accept(
    session: Session | Connection,
    refs: Sequence[OrderRef],
    result: AddCardResult,
    *,
    card_ticket: Callable[[str], StoredCredential],
) -> Accepted:
    """Store the result of the claim of ``refs`` (one caller's orders) and re-sign what it spent.
    Raises ``claim_ownership.UnknownOrders``, storing nothing, if the caller lacks any of the orders.

    Two statements when the result spent nothing (the orders, the insert); when it may have, the
    orders come with their tickets in one."""
    spent: dict[int, str] = {}
    if spends_nothing(result):
        orders = claim_ownership.all_owned_orders(session, refs)
    else:
        orders, tickets = claim_ownership.all_owned_orders_with_tickets(session, refs)
        spent = spent_nonces(result, outstanding_nonces(tickets))
    stored = StoredResult(
        mp_appid=refs[0].mp_appid,
        openid=refs[0].openid,
        order_nos=sorted({ref.order_no for ref in refs}),
        oa_appid=orders[0].oa_appid,
        order_ids=[o.id for o in orders],
        result=result,
        spent=spent,
    )
    current = card_ticket(stored.oa_appid) if spent else None  # before the first write
    inbox_id = inbox.store(
        session,
        source=InboxSource.CLIENT,
        kind=CLIENT_RESULT_KIND,
        dedupe_key=dedupe_key(refs, result, spent),
        payload=stored.model_dump_json(),
        official_account_id=orders[0].official_account_id,
    )
    resigned: list[int] = []
    if inbox_id is not None and current is not None:
        resigned = resign.resign_spent(session, spent, api_ticket=current.value, version=current.version)
    return Accepted(inbox_id=inbox_id, duplicate=inbox_id is None, resigned_orders=resigned)


def own_tickets(session: Session, order_ids: Collection[int]) -> dict[int, bool]:
    """ticket id → whether WeChat's ``user_get_card`` already proved it reached its holder."""
    rows = session.execute(
        select(Ticket.id, Ticket.confirmed_by_wechat, Ticket.state).where(Ticket.order_id.in_(order_ids))
    ).all()
    return {ticket_id: bool(by_wechat) and state in RECEIVED_STATES for ticket_id, by_wechat, state in rows}


def awaits_push(stored: StoredResult, own: dict[int, bool]) -> bool:
    """Whether this result reports a received ticket that WeChat's push has not proved claimed
    yet (``own``: :func:`own_tickets` of its orders). WeChat pushes ``user_get_card`` within
    moments of the ``wx.addCard``; applying the result after it costs no ``code/decrypt`` call (a
    daily quota, and most of a result's cost)."""
    if not stored.result.ok:
        return False
    named = (_ext_ticket(item.cardExt) for item in stored.result.cardList if item.isSuccess and item.code)
    return any(not own.get(ticket[0], True) for ticket in named if ticket is not None)


#: (ticket id, card id, decrypted code — None when WeChat already proved the claim)
Report = tuple[int, str, str | None]


def received_reports(
    stored: StoredResult, own: dict[int, bool], decrypt: Callable[[str], str], applied: Applied
) -> list[Report]:
    """The tickets a successful result reports received, in id order (as batches lock them):
    a code is decrypted only for a ticket WeChat's push has not proved (see :func:`apply`).
    Items naming none of the orders' tickets, and codes WeChat refuses, are noted in ``applied``."""
    received = [item for item in stored.result.cardList if stored.result.ok and item.isSuccess and item.code]
    reports: list[Report] = []
    for item in received:
        named = _ext_ticket(item.cardExt)
        if named is None or named[0] not in own:
            applied.notes.append(f"{item.cardId}: cardExt names none of the order's tickets")
            continue
        ticket_id = named[0]
        if own[ticket_id]:
            reports.append((ticket_id, item.cardId, None))
            continue
        try:
            reports.append((ticket_id, item.cardId, decrypt(item.code or "")))
        except BusinessError as exc:
            applied.notes.append(f"ticket {ticket_id}: code/decrypt refused (errcode {exc.errcode})")
    return sorted(reports, key=lambda report: report[0])


def apply(
    session: Session,
    stored: StoredResult,
    *,
    decrypt: Callable[[str], str],
    card_ticket: Callable[[str], StoredCredential],
    own: dict[int, bool] | None = None,
) -> Applied:
    """Claim what the client received and re-sign what it spent (a no-op when ``accept`` did).
    Errors WeChat may clear up later (busy, quota, token) propagate for a retry; a code WeChat
    refuses to decrypt is noted and skipped.

    A ticket WeChat's push already proved claimed is only marked reported by the client: its code
    is not decrypted. The decryption exists to prove a claim WeChat has not confirmed yet; for a
    proven one it would spend a ``code/decrypt`` call (a daily quota, at launch-day volume) to
    learn what is already known. The ticket is the caller's own either way.

    Every WeChat call (decrypt, card ticket) comes before the first write: a transaction never
    holds its write locks across a network call (on SQLite that lock is the whole database's)."""
    applied = Applied()
    own = own_tickets(session, stored.order_ids) if own is None else own
    reports = received_reports(stored, own, decrypt, applied)
    current = card_ticket(stored.oa_appid) if stored.spent else None

    for ticket_id, card_id, code in reports:
        if code is None:
            outcome = claims.record_client_report(session, ticket_id=ticket_id, card_id=card_id)
        else:
            outcome = claims.confirm_claim(
                session, ticket_id=ticket_id, card_id=card_id, code=code, signal=Signal.CLIENT
            )
        applied.outcomes[ticket_id] = outcome
        if outcome == ClaimOutcome.UNMATCHED:
            applied.notes.append(f"ticket {ticket_id}: decrypted code is not the ticket's code")
        else:
            applied.orders.update(stored.order_ids)
    if current is not None:
        applied.orders.update(
            resign.resign_spent(session, stored.spent, api_ticket=current.value, version=current.version)
        )
    return applied
