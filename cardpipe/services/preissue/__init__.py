"""Pre-issue: give every imported order its tickets before launch, so that a claim is a read.

Three steps, each safe to run any number of times:

* :func:`~cardpipe.services.preissue.tracking.start_preissue` marks the event ``preissuing`` (the
  caller then queues the planner); ``tracking`` also reads the progress and the orders still missing.
* :func:`~cardpipe.services.preissue.planner.plan_preissue` makes WeChat's stock cover the tickets
  (reads the card's real stock and raises it by exactly the shortfall; deposit-mode cards first
  get their codes deposited, 100 per call and verified with ``checkcode``; both in ``stock``),
  then hands the orders out in chunks of about ``preissue_chunk_tickets`` tickets: one message
  per chunk, carrying order ids only.
* :func:`~cardpipe.services.preissue.issue.issue_orders` creates the missing tickets of some orders,
  signed and ``ready`` (``batch`` holds and signs the rows, ``writes`` the per-dialect writers).

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

This package module holds only what every step shares: the error and the code source.
"""

from __future__ import annotations

from collections.abc import Callable

#: Draws ``count`` fresh codes of a ``length`` over an ``alphabet``.
CodeSource = Callable[[int, int, str], list[str]]


class PreissueError(RuntimeError):
    """Pre-issue cannot go on; the message says why (no secret in it)."""
