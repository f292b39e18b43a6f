"""The pre-issue benchmark's two references, each on a sample of its own event's orders
(tickets per second):

* naive: one ORM insert and one commit per ticket, signing after the flush;
* floor: codes and signatures in a tight loop, then a single ``COPY`` — one process, no queue,
  no per-chunk reads or commits.

Both import cardpipe lazily: the benchmark configures the environment first.
"""

from __future__ import annotations

import time


def naive_rate(event_id: int, appid: str) -> float:
    """One ORM insert and one commit per ticket, signing after the flush."""

    from sqlalchemy import select

    from cardpipe import clock
    from cardpipe.db import session_scope
    from cardpipe.runtime import credential_store
    from cardpipe.services.codes import new_code
    from cardpipe.services.ticket_signing import sign_card_ext
    from models import Event, Order, Ticket, TicketState

    with session_scope() as session:
        event = session.get(Event, event_id)
        assert event is not None and event.card_id is not None
        card_id, length, alphabet = event.card_id, event.code_length, event.code_alphabet
        orders = session.execute(select(Order.id, Order.ticket_count).where(Order.event_id == event_id)).all()
    current = credential_store().card_ticket(appid)
    started = time.perf_counter()
    count = 0
    for order_id, ticket_count in orders:
        for seq in range(1, ticket_count + 1):
            with session_scope() as session:
                ticket = Ticket(
                    event_id=event_id,
                    order_id=order_id,
                    seq=seq,
                    card_id=card_id,
                    code=new_code(length, alphabet),
                    state=TicketState.READY,
                )
                session.add(ticket)
                session.flush()
                signed = sign_card_ext(
                    api_ticket=current.value, card_id=card_id, code=ticket.code, outer_str=str(ticket.id)
                )
                ticket.card_ext, ticket.nonce, ticket.timestamp = signed.card_ext, signed.nonce, signed.timestamp
                ticket.ticket_version, ticket.signed_at = current.version, clock.now()
            count += 1
    return count / (time.perf_counter() - started)


def floor_rate(event_id: int, appid: str) -> float:
    """Codes and signatures in a tight loop, then one COPY and one commit."""

    from sqlalchemy import select, text

    from cardpipe import clock
    from cardpipe.db import get_engine, session_scope
    from cardpipe.runtime import credential_store
    from cardpipe.services.codes import new_codes
    from cardpipe.services.ticket_signing import sign_card_ext
    from models import Event, Order

    with session_scope() as session:
        event = session.get(Event, event_id)
        assert event is not None and event.card_id is not None
        card_id, length, alphabet = event.card_id, event.code_length, event.code_alphabet
        orders = session.execute(select(Order.id).where(Order.event_id == event_id)).scalars().all()
    current = credential_store().card_ticket(appid)
    with get_engine().connect() as connection:
        started = time.perf_counter()
        ids = (
            connection.execute(
                text("SELECT nextval(pg_get_serial_sequence('tickets', 'id')) FROM generate_series(1, :n)"),
                {"n": len(orders)},
            )
            .scalars()
            .all()
        )
        codes = new_codes(len(orders), length, alphabet)
        now = clock.now().isoformat()
        stamp = int(time.time())
        rows = []
        for ticket_id, order_id, code in zip(ids, orders, codes, strict=True):
            signed = sign_card_ext(
                api_ticket=current.value, card_id=card_id, code=code, outer_str=str(ticket_id), timestamp=stamp
            )
            rows.append(
                f"{ticket_id}\t{event_id}\t{order_id}\t1\t{card_id}\t{code}\tready\t{signed.card_ext}\t"
                f"{current.version}\t{signed.nonce}\t{stamp}\t{now}\tf\tf\t{now}\n"
            )
        raw = connection.connection.driver_connection
        assert raw is not None  # a live pooled connection
        columns = (
            "id, event_id, order_id, seq, card_id, code, state, card_ext, ticket_version, nonce, timestamp, "
            "signed_at, confirmed_by_client, confirmed_by_wechat, updated_at"
        )
        with raw.cursor().copy(f"COPY tickets ({columns}) FROM STDIN") as copy:
            copy.write("".join(rows))
        connection.commit()
        return len(rows) / (time.perf_counter() - started)
