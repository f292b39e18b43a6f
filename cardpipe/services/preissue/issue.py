"""Pre-issue: give every imported order its tickets before launch, so that a claim is a read.

Three steps, each safe to run any number of times:

* :func:`start_preissue` marks the event ``preissuing`` (the caller then queues the planner).
* :func:`plan_preissue` makes WeChat's stock cover the tickets (reads the card's real stock and
  raises it by exactly the shortfall; deposit-mode cards first get their codes deposited, 100 per
  call and verified with ``checkcode``), then hands the orders out in chunks of about
  ``preissue_chunk_tickets`` tickets: one message per chunk, carrying order ids only.
* :func:`issue_orders` creates the missing tickets of some orders, signed and ``ready``.

The event reads ``issued`` only when every order has its tickets *and* the planner recorded that
WeChat's stock covers them (``stock_covered``): tickets issued by a reconcile while the planner's
message was lost leave the event ``preissuing``, and the reconcile sends the planner again.

Codes are drawn with a CSPRNG; the database's unique ``(card_id, code)`` is the arbiter, and a
colliding code is redrawn, never a failure. Writes are set-based, one round trip per chunk: on
PostgreSQL one ``COPY`` straight into ``tickets`` inside a savepoint; should a unique key refuse
it, the batch goes again through a temp table and ``INSERT … ON CONFLICT DO NOTHING RETURNING``,
and the rows that did not go in get new codes. On SQLite it is an ``executemany INSERT OR IGNORE``
(SQLite has one writer; the transaction takes the write lock first).

Why a chunk run twice, or two chunks sharing orders, create nothing twice and keep the progress
counters exact: every writer inserts its rows in (order_id, seq) order, so of two transactions
wanting the same order, the second blocks on the first's first row of it and, once that commits,
finds the whole order present. Each order's tickets are therefore created by exactly one
transaction, which counts them (``tickets_issued``) and the order (``orders_complete``) in the
same commit.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

import psycopg
from sqlalchemy import and_, func, insert, select, text, update
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.credentials import StoredCredential
from cardpipe.services.codes import new_codes
from cardpipe.services.events import CARD_ID, UnknownEvent, event_oa_appid, get_event
from cardpipe.services.ticket_signing import sign_card_ext
from models import RECEIVED_STATES, CodeMode, Event, EventState, OfficialAccount, Order, Ticket, TicketState
from wechat.client import MAX_CODES_PER_CALL, CardApi

log = logging.getLogger(__name__)

#: Rounds of redrawing colliding codes before giving up (one collision in 10^9 draws is already
#: rare; a policy too small for its event fails here instead of looping).
MAX_DRAWS = 8
#: Deposit calls in a row that add no new code before the planner gives up.
MAX_FRUITLESS_DEPOSITS = 5
#: IN lists are sent in slices of this many ids.
ID_SLICE = 1000

TicketLookup = Callable[[str], StoredCredential]
CodeSource = Callable[[int, int, str], list[str]]


class PreissueError(RuntimeError):
    """Pre-issue cannot go on; the message says why (no secret in it)."""


@dataclass(frozen=True)
class IssueOutcome:
    tickets_created: int
    orders_completed: int
    codes_redrawn: int


@dataclass(frozen=True)
class PlanOutcome:
    orders_sent: int
    chunks_sent: int
    stock_before: int
    stock_increase: int
    codes_deposited: int


@dataclass(frozen=True)
class Progress:
    event_id: int
    state: str
    orders_total: int
    orders_complete: int
    tickets_total: int
    tickets_issued: int
    stock_covered: int
    preissue_started_at: datetime | None
    #: Tickets per state; None when not asked for (it is a count over every ticket of the event).
    tickets_by_state: dict[str, int] | None = None


# --- start and progress -------------------------------------------------------------------


def start_preissue(session: Session, event_id: int) -> Event:
    """``draft`` → ``preissuing``; an ``issued`` event with orders imported since goes back to
    ``preissuing``. The caller queues the planner after the commit."""
    event = get_event(session, event_id)
    if event.card_id is None:
        raise PreissueError(f"event {event_id} has no card")
    now = clock.now()
    session.execute(
        update(Event)
        .where(
            Event.id == event_id,
            (Event.state == EventState.DRAFT)
            | ((Event.state == EventState.ISSUED) & (Event.orders_complete < Event.orders_total)),
        )
        .values(state=EventState.PREISSUING, preissue_started_at=now)
        .execution_options(synchronize_session=False)
    )
    session.refresh(event)
    return event


def preissue_progress(session: Session, event_id: int, *, by_state: bool = True) -> Progress:
    event = session.get(Event, event_id)
    if event is None:
        raise UnknownEvent(f"no event {event_id}")
    counts: dict[str, int] | None = None
    if by_state:
        counts = {state.value: 0 for state in TicketState}
        rows = session.execute(
            select(Ticket.state, func.count()).where(Ticket.event_id == event_id).group_by(Ticket.state)
        )
        counts.update({state: count for state, count in rows})
    return Progress(
        event_id=event.id,
        state=event.state,
        orders_total=event.orders_total,
        orders_complete=event.orders_complete,
        tickets_total=event.tickets_total,
        tickets_issued=event.tickets_issued,
        stock_covered=event.stock_covered,
        preissue_started_at=event.preissue_started_at,
        tickets_by_state=counts,
    )


def _missing_filter(event_id: int, after_id: int) -> Any:
    present = select(func.count()).where(Ticket.order_id == Order.id).scalar_subquery()
    return and_(Order.event_id == event_id, Order.id > after_id, Order.ticket_count > present)


def orders_missing_tickets(session: Session, event_id: int, limit: int, *, after_id: int = 0) -> list[int]:
    """Ids of the event's orders without all their tickets, in id order from ``after_id``: the
    pending pre-issue work (the scheduler re-queues these through ``issue_orders``)."""
    query = select(Order.id).where(_missing_filter(event_id, after_id)).order_by(Order.id).limit(limit)
    return list(session.scalars(query))


# --- the planner --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    appid: str
    card_id: str
    code_mode: str
    code_length: int
    code_alphabet: str
    tickets_total: int
    tickets_received: int
    orders_all_missing: bool

    @property
    def tickets_needing_stock(self) -> int:
        return self.tickets_total - self.tickets_received


def _recount(session: Session, event_id: int) -> _Plan:
    """Lock the event row (an import in progress finishes first), recount the totals exactly
    and store them, and read what the planner needs."""
    event = session.scalars(select(Event).where(Event.id == event_id).with_for_update()).one_or_none()
    if event is None:
        raise UnknownEvent(f"no event {event_id}")
    if event.card_id is None:
        raise PreissueError(f"event {event_id} has no card")
    orders, tickets = session.execute(
        select(func.count(), func.coalesce(func.sum(Order.ticket_count), 0)).where(Order.event_id == event_id)
    ).one()
    received = session.scalar(
        select(func.count()).where(Ticket.event_id == event_id, Ticket.state.in_(RECEIVED_STATES))
    )
    event.orders_total, event.tickets_total = int(orders), int(tickets)
    return _Plan(
        appid=event_oa_appid(session, event),
        card_id=event.card_id,
        code_mode=event.code_mode,
        code_length=event.code_length,
        code_alphabet=event.code_alphabet,
        tickets_total=int(tickets),
        tickets_received=int(received or 0),
        orders_all_missing=event.orders_complete == 0,
    )


def card_stock(api: CardApi, card_id: str) -> int:
    """The card's current stock (``sku.quantity`` of ``card/get``)."""
    card = api.card_get(card_id)
    inner = card.get(str(card.get("card_type", "")).lower()) or {}
    sku = (inner.get("base_info") or {}).get("sku") or {}
    try:
        return int(sku["quantity"])
    except (KeyError, TypeError, ValueError):
        raise PreissueError(f"card/get of {card_id} has no sku.quantity") from None


def deposit_codes(api: CardApi, card_id: str, wanted: int, draw: Callable[[int], list[str]]) -> int:
    """Deposit fresh codes, 100 per call, until WeChat holds ``wanted``; every batch is checked
    with ``checkcode``. Returns how many were deposited now. Resumable: it starts from WeChat's
    own count, so a crashed run is finished, not repeated."""
    held = api.deposit_count(card_id)
    deposited = 0
    fruitless = 0
    while held < wanted:
        batch = draw(min(MAX_CODES_PER_CALL, wanted - held))
        result = api.deposit_codes(card_id, batch)
        found = set(api.check_codes(card_id, batch).exist)
        if result.succ_codes is not None:
            missing = set(result.succ_codes) - found
            if missing:
                raise PreissueError(f"checkcode does not find {len(missing)} codes deposit reported deposited")
            added = len(set(result.succ_codes))
        else:
            added = len(found) - result.duplicate_count
        held += added
        deposited += added
        fruitless = 0 if added else fruitless + 1
        if fruitless >= MAX_FRUITLESS_DEPOSITS:
            raise PreissueError(f"{fruitless} deposit calls in a row added no code")
    return deposited


def _stream_orders(session: Session, event_id: int, only_missing: bool) -> Iterator[tuple[int, int]]:
    """(id, ticket_count) of the event's orders (or of those missing tickets), in id order,
    without holding them all: on PostgreSQL through a server-side cursor, as plain tuples."""
    condition = _missing_filter(event_id, 0) if only_missing else Order.event_id == event_id
    query = select(Order.id, Order.ticket_count).where(condition).order_by(Order.id)
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        yield from ((row.id, row.ticket_count) for row in session.execute(query.execution_options(yield_per=10_000)))
        return
    compiled = query.compile(connection, compile_kwargs={"literal_binds": True})
    driver = connection.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    with driver.cursor(name="preissue_orders") as cursor:
        cursor.itersize = 10_000
        cursor.execute(str(compiled))
        yield from cursor


def chunk_orders(orders: Iterable[tuple[int, int]], chunk_tickets: int) -> Iterator[list[int]]:
    """Whole orders, about ``chunk_tickets`` tickets per chunk."""
    chunk: list[int] = []
    tickets = 0
    for order_id, count in orders:
        chunk.append(order_id)
        tickets += count
        if tickets >= chunk_tickets:
            yield chunk
            chunk, tickets = [], 0
    if chunk:
        yield chunk


def plan_preissue(
    event_id: int,
    *,
    sessions: Callable[[], AbstractContextManager[Session]],
    card_api: Callable[[str], CardApi],
    send_chunk: Callable[[int, list[int]], None],
    chunk_tickets: int,
    stock_lock: AbstractContextManager[object] | None = None,
    draw_codes: CodeSource = new_codes,
) -> PlanOutcome:
    """Make the stock cover the event's tickets, then send its orders in chunks.

    ``stock_lock`` is held around the stock read-and-raise (and deposits), so two planners never
    both raise by the same shortfall. No database transaction stays open across WeChat calls.
    """
    with sessions() as session:
        plan = _recount(session, event_id)
    api = card_api(plan.appid)
    deposited = 0
    with stock_lock or nullcontext():
        if plan.code_mode == CodeMode.DEPOSIT:
            deposited = deposit_codes(
                api,
                plan.card_id,
                plan.tickets_total,
                lambda count: draw_codes(count, plan.code_length, plan.code_alphabet),
            )
        stock = card_stock(api, plan.card_id)
        shortfall = max(0, plan.tickets_needing_stock - stock)
        if shortfall:
            api.modify_stock(plan.card_id, increase=shortfall)
        with sessions() as session:
            _record_stock(session, event_id, stock + shortfall, plan.tickets_received)
            _record_stock_covered(session, event_id, plan.tickets_total)
    log.info(
        "event %s: stock %d raised by %d for %d tickets (%d already received), %d codes deposited",
        event_id,
        stock,
        shortfall,
        plan.tickets_total,
        plan.tickets_received,
        deposited,
    )
    orders = chunks = 0
    with sessions() as session:
        for chunk in chunk_orders(_stream_orders(session, event_id, not plan.orders_all_missing), chunk_tickets):
            send_chunk(event_id, chunk)
            orders += len(chunk)
            chunks += 1
        _finish_if_complete(session, event_id)
    log.info("event %s: %d orders sent in %d chunks", event_id, orders, chunks)
    return PlanOutcome(orders, chunks, stock, shortfall, deposited)


def _record_stock(session: Session, event_id: int, stock: int, received: int) -> None:
    session.execute(
        update(Event)
        .where(Event.id == event_id)
        .values(wechat_stock=stock, wechat_stock_received=received, wechat_stock_at=clock.now())
    )


def _record_stock_covered(session: Session, event_id: int, tickets: int) -> None:
    """WeChat's stock now covers ``tickets`` tickets of the event (never lowered: a later,
    smaller count is an older planner's)."""
    session.execute(
        update(Event)
        .where(Event.id == event_id, Event.stock_covered < tickets)
        .values(stock_covered=tickets)
        .execution_options(synchronize_session=False)
    )


def _finish_if_complete(session: Session, event_id: int) -> None:
    session.execute(
        update(Event)
        .where(
            Event.id == event_id,
            Event.state == EventState.PREISSUING,
            Event.orders_complete >= Event.orders_total,
            Event.stock_covered >= Event.tickets_total,
        )
        .values(state=EventState.ISSUED)
        .execution_options(synchronize_session=False)
    )


def stock_uncovered(session: Session, event_id: int) -> bool:
    """Whether the event has tickets WeChat's stock was not (yet) raised for: its planner must run."""
    row = session.execute(select(Event.stock_covered, Event.tickets_total).where(Event.id == event_id)).one_or_none()
    return row is not None and row.stock_covered < row.tickets_total


# --- issuing a chunk ----------------------------------------------------------------------


@dataclass
class _Batch:
    """The tickets one transaction creates, as parallel columns (a million dataclass instances
    would cost more than the signing)."""

    event_id: int
    card_id: str
    version: int
    timestamp: int
    signed_at: datetime
    ids: list[int]
    order_ids: list[int]
    seqs: list[int]
    codes: list[str | None]
    exts: list[str] = field(default_factory=list)
    nonces: list[str] = field(default_factory=list)

    def sign(self, api_ticket: str, indexes: Iterable[int]) -> None:
        card_id, stamp, ids, codes, exts, nonces = (
            self.card_id,
            self.timestamp,
            self.ids,
            self.codes,
            self.exts,
            self.nonces,
        )
        with _cyclic_gc_paused():
            for i in indexes:
                signed = sign_card_ext(
                    api_ticket=api_ticket, card_id=card_id, code=codes[i], outer_str=str(ids[i]), timestamp=stamp
                )
                exts[i] = signed.card_ext
                nonces[i] = signed.nonce


class _CyclicGcPause:
    """Signing allocates about ten short-lived dicts, lists and dataclasses per ticket; counting
    them, the cyclic collector keeps walking the worker's whole heap (SQLAlchemy, dramatiq, …),
    which measured 15–20 % of the signing time. Nothing there forms a cycle (reference counting
    frees it all), so the collector is paused while any thread of the process signs a chunk."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._resume = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0 and self._resume:
                    gc.enable()


_cyclic_gc_paused = _CyclicGcPause()


class _TicketStore(Protocol):
    def orders(self, event_id: int, order_ids: Sequence[int]) -> list[tuple[int, int]]:
        """(id, ticket_count) of those of ``order_ids`` that belong to the event, in id order."""
        ...

    def present_seqs(self, order_ids: Sequence[int]) -> dict[int, set[int]]: ...

    def allocate_ids(self, count: int) -> list[int]: ...

    def insert(self, batch: _Batch, indexes: list[int]) -> list[int]:
        """Insert those rows of ``batch``; returns the indexes a unique key kept out."""
        ...


def _slices(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), ID_SLICE):
        yield ids[start : start + ID_SLICE]


def _by_order(rows: Iterable[Any]) -> dict[int, set[int]]:
    present: dict[int, set[int]] = defaultdict(set)
    for order_id, seq in rows:
        present[order_id].add(seq)
    return present


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
    store = _store_for(session)
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
    batch = _Batch(
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


def _taken_by_others(store: _TicketStore, batch: _Batch, kept_out: list[int]) -> set[int]:
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


def _store_for(session: Session) -> _TicketStore:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return _PostgresTickets(session)
    if dialect == "sqlite":
        return _SqliteTickets(session)
    raise PreissueError(f"pre-issue does not support {dialect}")


_COPY_COLUMNS = (
    "id, order_id, seq, code, card_ext, nonce, event_id, card_id, state, ticket_version, timestamp, "
    "signed_at, confirmed_by_client, confirmed_by_wechat, updated_at"
)
_STAGING = "preissue_staging"
# One array parameter instead of an IN list: a thousand bind parameters cost more to render and
# parse than the rows they select. A chunk of consecutive ids (the planner's) is read as a range:
# one index descent instead of one per id.
_PG_ORDERS = "SELECT id, ticket_count FROM orders WHERE event_id = %s AND id = ANY(%s::bigint[]) ORDER BY id"
_PG_ORDERS_RANGE = "SELECT id, ticket_count FROM orders WHERE event_id = %s AND id BETWEEN %s AND %s ORDER BY id"
_PG_PRESENT = "SELECT order_id, seq FROM tickets WHERE order_id = ANY(%s::bigint[])"
_PG_PRESENT_RANGE = "SELECT order_id, seq FROM tickets WHERE order_id BETWEEN %s AND %s"
# nextval() of a name looked up per row costs ten times the increment: the sequence is named once.
_PG_NEW_IDS = "SELECT array_agg(nextval(%s::regclass)) FROM generate_series(1, %s)"
_PG_ID_SEQUENCE = "SELECT pg_get_serial_sequence('tickets', 'id')"


def _dense(sorted_ids: Sequence[int]) -> bool:
    """At least half of the id range is wanted: a range scan reads little that is not."""
    return bool(sorted_ids) and sorted_ids[-1] - sorted_ids[0] < 2 * len(sorted_ids)


def _pg_array(ids: Sequence[int]) -> str:
    """An int array as its text literal: psycopg adapts a list element by element in Python."""
    return "{" + ",".join(map(str, ids)) + "}"


_COPY_NULL = "\\N"


class _PostgresTickets:
    #: The name of the tickets.id sequence (the same in every database of this schema).
    id_sequence: ClassVar[str | None] = None

    def __init__(self, session: Session) -> None:
        self._session = session

    def _driver(self) -> psycopg.Connection[Any]:
        """The session's own psycopg connection (same transaction): rows come back as plain
        tuples, without SQLAlchemy's per-row work."""
        connection = self._session.connection().connection.driver_connection
        assert isinstance(connection, psycopg.Connection)
        return connection

    def orders(self, event_id: int, order_ids: Sequence[int]) -> list[tuple[int, int]]:
        if _dense(order_ids):
            wanted = set(order_ids)
            rows = self._driver().execute(_PG_ORDERS_RANGE, (event_id, order_ids[0], order_ids[-1]))
            return [row for row in rows if row[0] in wanted]
        return self._driver().execute(_PG_ORDERS, (event_id, _pg_array(order_ids))).fetchall()

    def present_seqs(self, order_ids: Sequence[int]) -> dict[int, set[int]]:
        if _dense(order_ids):
            wanted = set(order_ids)
            rows = self._driver().execute(_PG_PRESENT_RANGE, (order_ids[0], order_ids[-1]))
            return _by_order(row for row in rows if row[0] in wanted)
        return _by_order(self._driver().execute(_PG_PRESENT, (_pg_array(order_ids),)).fetchall())

    def allocate_ids(self, count: int) -> list[int]:
        connection = self._driver()
        if _PostgresTickets.id_sequence is None:
            _PostgresTickets.id_sequence = str(connection.execute(_PG_ID_SEQUENCE).fetchone()[0])  # type: ignore[index]
        row = connection.execute(_PG_NEW_IDS, (_PostgresTickets.id_sequence, count)).fetchone()
        return list(row[0]) if row and row[0] else []

    def insert(self, batch: _Batch, indexes: list[int]) -> list[int]:
        connection = self._driver()
        payload = _copy_rows(batch, indexes)
        try:
            with (
                connection.transaction(),
                connection.cursor().copy(f"COPY tickets ({_COPY_COLUMNS}) FROM STDIN") as copy,
            ):
                copy.write(payload)
            return []
        except psycopg.errors.UniqueViolation:
            log.info("event %s: a unique key refused the COPY; going through ON CONFLICT", batch.event_id)
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} (LIKE tickets INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            cursor.execute(f"TRUNCATE {_STAGING}")
            with cursor.copy(f"COPY {_STAGING} ({_COPY_COLUMNS}) FROM STDIN") as copy:
                copy.write(payload)
            cursor.execute(
                f"INSERT INTO tickets ({_COPY_COLUMNS}) SELECT {_COPY_COLUMNS} FROM {_STAGING} "
                "ORDER BY order_id, seq ON CONFLICT DO NOTHING RETURNING id"
            )
            inserted = {row[0] for row in cursor.fetchall()}
        return [i for i in indexes if batch.ids[i] not in inserted]


def _copy_rows(batch: _Batch, indexes: list[int]) -> str:
    """COPY text rows. Every value is digits, hex, a code of the policy's alphanumerics, a
    card_id matching ``CARD_ID`` or cardExt JSON built from those: nothing needs escaping."""
    signed_at = batch.signed_at.isoformat()
    tail = (
        f"\t{batch.event_id}\t{batch.card_id}\t{TicketState.READY.value}\t{batch.version}\t{batch.timestamp}"
        f"\t{signed_at}\tf\tf\t{signed_at}\n"
    )
    ids, order_ids, seqs, codes, exts, nonces = (
        batch.ids,
        batch.order_ids,
        batch.seqs,
        batch.codes,
        batch.exts,
        batch.nonces,
    )
    return "".join(
        f"{ids[i]}\t{order_ids[i]}\t{seqs[i]}\t{codes[i] or _COPY_NULL}\t{exts[i]}\t{nonces[i]}{tail}" for i in indexes
    )


class _SqliteTickets:
    """The embedded demo's store. SQLite has one writer: touching the event row first takes the
    write lock for the whole transaction, which makes ``max(id) + 1`` ids safe."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def orders(self, event_id: int, order_ids: Sequence[int]) -> list[tuple[int, int]]:
        self._session.execute(
            update(Event)
            .where(Event.id == event_id)
            .values(tickets_issued=Event.tickets_issued)
            .execution_options(synchronize_session=False)
        )
        locked: list[tuple[int, int]] = []
        for part in _slices(order_ids):
            query = select(Order.id, Order.ticket_count).where(Order.event_id == event_id, Order.id.in_(part))
            locked.extend((order_id, count) for order_id, count in self._session.execute(query.order_by(Order.id)))
        return locked

    def present_seqs(self, order_ids: Sequence[int]) -> dict[int, set[int]]:
        query = select(Ticket.order_id, Ticket.seq)
        return _by_order(
            row for part in _slices(order_ids) for row in self._session.execute(query.where(Ticket.order_id.in_(part)))
        )

    def allocate_ids(self, count: int) -> list[int]:
        last = self._session.scalar(select(func.coalesce(func.max(Ticket.id), 0))) or 0
        return list(range(last + 1, last + 1 + count))

    def insert(self, batch: _Batch, indexes: list[int]) -> list[int]:
        rows = [
            {
                "id": batch.ids[i],
                "event_id": batch.event_id,
                "order_id": batch.order_ids[i],
                "seq": batch.seqs[i],
                "card_id": batch.card_id,
                "code": batch.codes[i],
                "state": TicketState.READY.value,
                "card_ext": batch.exts[i],
                "ticket_version": batch.version,
                "nonce": batch.nonces[i],
                "timestamp": batch.timestamp,
                "signed_at": batch.signed_at,
                "confirmed_by_client": False,
                "confirmed_by_wechat": False,
                "updated_at": batch.signed_at,
            }
            for i in indexes
        ]
        self._session.execute(insert(Ticket.__table__).prefix_with("OR IGNORE"), rows)
        wanted = [batch.ids[i] for i in indexes]
        inserted: set[int] = set()
        for part in _slices(wanted):
            inserted.update(self._session.scalars(select(Ticket.id).where(Ticket.id.in_(part))))
        return [i for i in indexes if batch.ids[i] not in inserted]
