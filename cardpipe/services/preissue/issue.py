"""Issuing a chunk: create the missing tickets of some orders, signed and ``ready``.

Codes are drawn with a CSPRNG; the database's unique ``(card_id, code)`` is the arbiter, and a
colliding code is redrawn, never a failure. A row kept out because its (order, seq) now exists was
committed by a duplicate of this chunk: nothing to redraw there. The progress counters move in the
chunk's own transaction, by exactly what it created.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.credentials import StoredCredential
from cardpipe.services.codes import new_codes
from cardpipe.services.events import CARD_ID, UnknownEvent
from cardpipe.services.preissue import CodeSource, PreissueError
from cardpipe.services.preissue.batch import TicketBatch
from cardpipe.services.preissue.writes import TicketStore, store_for
from models import CodeMode, Event, EventState, OfficialAccount

#: Rounds of redrawing colliding codes before giving up (one collision in 10^9 draws is already
#: rare; a policy too small for its event fails here instead of looping).
MAX_DRAWS = 8


TicketLookup = Callable[[str], StoredCredential]


@dataclass(frozen=True)
class IssueOutcome:
    tickets_created: int
    orders_completed: int
    codes_redrawn: int


def issue_orders(
    session: Session,
    event_id: int,
    order_ids: Sequence[int],
    *,
    card_ticket: TicketLookup,
    draw_codes: CodeSource = new_codes,
) -> IssueOutcome:
    """Create the missing tickets of ``order_ids`` (orders of other events are ignored), signed
    with the current api_ticket and ``ready``. The caller commits."""
    event = _card_of(session, event_id)
    ticket = card_ticket(event.appid)
    store = store_for(session)
    orders = store.orders(event_id, sorted(set(order_ids)))
    present = store.present_seqs([order_id for order_id, _ in orders])
    missing = [
        (order_id, seq) for order_id, count in orders for seq in range(1, count + 1) if seq not in present[order_id]
    ]
    if not missing:
        return IssueOutcome(0, 0, 0)

    def draw(count: int) -> list[str | None]:
        if not event.custom_codes:
            return [None] * count
        return list(draw_codes(count, event.code_length, event.code_alphabet))

    now = clock.now()
    batch = TicketBatch(
        event_id=event_id,
        card_id=event.card_id,
        version=ticket.version,
        timestamp=int(now.timestamp()),
        signed_at=now,
        ids=store.allocate_ids(len(missing)),
        order_ids=[order_id for order_id, _ in missing],
        seqs=[seq for _, seq in missing],
        codes=draw(len(missing)),
        exts=[""] * len(missing),
        nonces=[""] * len(missing),
    )
    pending = list(range(len(missing)))
    batch.sign(ticket.value, pending)
    redrawn = 0
    taken: set[int] = set()
    for _ in range(MAX_DRAWS):
        kept_out = store.insert(batch, pending)
        taken_now = _taken_by_others(store, batch, kept_out)
        taken |= taken_now
        pending = [i for i in kept_out if i not in taken_now]
        if not pending:
            break
        redrawn += len(pending)
        for i, code in zip(pending, draw(len(pending)), strict=True):
            batch.codes[i] = code
        batch.sign(ticket.value, pending)
    else:
        raise PreissueError(f"event {event_id}: no unused code found in {MAX_DRAWS} draws; widen the code policy")

    created = Counter(batch.order_ids[i] for i in range(len(missing)) if i not in taken)
    wanted = Counter(order_id for order_id, _ in missing)
    completed = sum(1 for order_id, count in wanted.items() if created[order_id] == count)
    _count_issued(session, event_id, sum(created.values()), completed)
    return IssueOutcome(sum(created.values()), completed, redrawn)


@dataclass(frozen=True)
class _EventCard:
    appid: str
    card_id: str
    custom_codes: bool
    code_length: int
    code_alphabet: str


def _card_of(session: Session, event_id: int) -> _EventCard:
    """What a chunk needs of its event, in one light query (it runs once per chunk)."""
    row = session.execute(
        select(Event.card_id, Event.code_mode, Event.code_length, Event.code_alphabet, OfficialAccount.appid)
        .join(OfficialAccount, OfficialAccount.id == Event.official_account_id)
        .where(Event.id == event_id)
    ).one_or_none()
    if row is None:
        raise UnknownEvent(f"no event {event_id}")
    if row.card_id is None:
        raise PreissueError(f"event {event_id} has no card")
    if not CARD_ID.match(row.card_id):
        raise PreissueError(f"event {event_id} has a card_id cardpipe cannot write")
    return _EventCard(row.appid, row.card_id, row.code_mode == CodeMode.CUSTOM, row.code_length, row.code_alphabet)


def _taken_by_others(store: TicketStore, batch: TicketBatch, kept_out: list[int]) -> set[int]:
    """Of the rows a unique key kept out, those whose (order, seq) now exists: a duplicate of this
    chunk committed them first. Nothing to redraw there; the rest collided on a code."""
    if not kept_out:
        return set()
    wanted = {(batch.order_ids[i], batch.seqs[i]): i for i in kept_out}
    present = store.present_seqs(sorted({order_id for order_id, _ in wanted}))
    return {i for (order_id, seq), i in wanted.items() if seq in present.get(order_id, ())}


_COUNT_ISSUED = text(
    f"""
    UPDATE events SET
        tickets_issued = tickets_issued + :tickets,
        orders_complete = orders_complete + :orders,
        state = CASE WHEN state = '{EventState.PREISSUING.value}' AND orders_complete + :orders >= orders_total
                          AND stock_covered >= tickets_total
                     THEN '{EventState.ISSUED.value}' ELSE state END
    WHERE id = :event_id
    """
)


def _count_issued(session: Session, event_id: int, tickets: int, orders: int) -> None:
    """Add to the progress counters in the chunk's transaction, and mark the event issued when
    this chunk completed its last order and the planner has raised the stock for every ticket."""
    session.execute(_COUNT_ISSUED, {"event_id": event_id, "tickets": tickets, "orders": orders})
