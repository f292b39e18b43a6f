"""Telling WeChat: the queued ``code/consume`` of a redemption and ``code/unavailable`` of a
revocation. The workers in ``workers/redemptions.py`` call these; they are safe to run any number
of times, concurrently too, and every outcome is written to the database before it is trusted.

Exactly once in effect
----------------------
WeChat consumes a code at most once (a second consume answers 40099), so the danger is not a
double consume but misreading the outcome of one we sent. Before each ``code/consume`` we commit
``consume_attempts += 1, consume_in_doubt += 1``; a definite answer from WeChat (success, or an
errcode: it refused, so *this* call consumed nothing) takes the doubt back
(``consume_in_doubt -= 1``); a timeout, a dropped connection or a crash leaves it. Then:

- ``code/get`` first (``check_consume: false``, so the status comes back instead of an error).
  ``NORMAL`` → send the consume. Success → ``done``.
- ``CONSUMED`` (from ``code/get``, or 40099 from ``code/consume``) while a consume of ours is in
  doubt → that consume of ours went through after we stopped waiting: ``done``, not a
  disagreement. With no consume of ours in doubt, someone else consumed it (WeChat's back
  office): ``disagrees``.
- Any other status (``DELETE``, ``UNAVAILABLE``, ``EXPIRE``…) or 40056 (WeChat does not know the
  code): the consume can never succeed; ``disagrees`` with WeChat's status, for ops.
- Transport failures, -1, token and quota errors propagate: the actor is retried until it
  succeeds (and the resync sweep re-queues anything a lost message left ``pending``).

A ``user_consume_card`` push for our consume may be processed before the worker has stored the
answer; it sees the consume in doubt and settles it as ``done`` (``record_wechat_consume``).

Consumes in sets
----------------
An offline gate's upload or the end of an event redeems tickets by the thousand; their consumes
are queued as one intent (and one message) per :data:`CONSUME_CHUNK` redemptions
(:func:`queue_consumes`), not one per ticket. WeChat consumes one code per call, so
:func:`sync_consumes` takes the chunk's redemptions that are still ``pending`` and brings each
through :func:`sync_consume` above, guarded by its own row as a single consume is: a message run
twice, or retried after a partial failure, redoes only what is not settled. A failure that is not
about one code (transport, -1, token, quota or rate, our own database) stops the chunk at once
and propagates, so the message is retried (quota refusals deferred) for the rest; WeChat refusing
one code with an unexpected errcode does not hold the others back: it is raised once the rest were
tried. The message's outbox intent is dropped only when the whole chunk succeeded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from cardpipe import clock
from cardpipe.db import session_scope
from cardpipe.services import outbox
from cardpipe.services.outbox import Executor, Intent
from cardpipe.services.wechat_consumes import mark_consume_disagrees
from models import ConsumeSync, Event, OfficialAccount, Redemption, Revocation, Ticket
from wechat.client import CardApi
from wechat.errors import BusinessError, WeChatError

log = logging.getLogger(__name__)

NORMAL = "NORMAL"
CONSUMED = "CONSUMED"
UNAVAILABLE = "UNAVAILABLE"
#: WeChat's statuses after which there is nothing left to make unavailable.
_GONE = frozenset({"DELETE", "EXPIRE", UNAVAILABLE})
ALREADY_CONSUMED = 40099
#: WeChat answers these when a code cannot be consumed or made unavailable: no retry helps.
_CODE_REFUSED = frozenset({40056, 40116, 40127})
#: WeChat does not know the code.
UNKNOWN_CODE = "UNKNOWN_CODE"

ApiFor = Callable[[str], CardApi]

#: Redemptions per consume message: a few seconds of a worker's calls at WeChat's rate.
CONSUME_CHUNK = 200


@dataclass(frozen=True, slots=True)
class _Target:
    """The code to act on and the official account that owns its card."""

    row_id: int
    appid: str
    card_id: str
    code: str
    #: Shown to the holder by WeChat (revocations only).
    reason: str = ""


def _code_status(api: CardApi, target: _Target) -> str:
    try:
        return api.code_get(target.card_id, target.code, check_consume=False).user_card_status
    except BusinessError as exc:
        if exc.errcode in _CODE_REFUSED:
            return UNKNOWN_CODE
        raise


# -- code/consume ------------------------------------------------------------------------------


def sync_consume(redemption_id: int, api_for: ApiFor) -> ConsumeSync | None:
    """Bring one ``ok`` redemption's WeChat consume to ``done`` (or ``disagrees``). Returns the
    outcome, or None when there was nothing to do (already settled)."""
    target = _start_consume(redemption_id)
    if target is None:
        return None
    api = api_for(target.appid)
    status = _code_status(api, target)
    if status == NORMAL:
        return _send_consume(api, target)
    if status == CONSUMED:
        return _settle_consumed(target.row_id, "WeChat had the code consumed before our consume reached it")
    return _disagree(target.row_id, f"WeChat reports the code {status}: it cannot be consumed")


def queue_consumes(executor: Executor, actor: str, redemption_ids: Sequence[int]) -> list[Intent]:
    """The intents, in the writer's transaction, to run ``actor`` (the worker that calls
    :func:`sync_consumes`) on these redemptions: one per :data:`CONSUME_CHUNK` of them. The writer
    flushes them after its commit."""
    ids = list(redemption_ids)
    chunks = [[ids[start : start + CONSUME_CHUNK]] for start in range(0, len(ids), CONSUME_CHUNK)]
    return outbox.add_many(executor, actor, chunks)


def sync_consumes(redemption_ids: Sequence[int], api_for: ApiFor) -> dict[int, ConsumeSync]:
    """:func:`sync_consume` for each of these redemptions still ``pending``, in id order; the
    outcome of each one settled now. See "Consumes in sets" above for what stops the set."""
    with session_scope() as session:
        pending = session.scalars(
            select(Redemption.id)
            .where(Redemption.id.in_(list(redemption_ids)), Redemption.consume_sync == ConsumeSync.PENDING)
            .order_by(Redemption.id)
        ).all()
    apis: dict[str, CardApi] = {}

    def api_once(appid: str) -> CardApi:
        if appid not in apis:
            apis[appid] = api_for(appid)
        return apis[appid]

    outcomes: dict[int, ConsumeSync] = {}
    refused: BusinessError | None = None
    for redemption_id in pending:
        try:
            outcome = sync_consume(redemption_id, api_once)
        except BusinessError as exc:
            log.warning("WeChat refused the consume of redemption %d: %s", redemption_id, exc)
            refused = refused or exc
            continue
        if outcome is not None:
            outcomes[redemption_id] = outcome
    if refused is not None:
        raise refused
    return outcomes


def _start_consume(redemption_id: int) -> _Target | None:
    with session_scope() as session:
        row = session.execute(
            select(Redemption.id, Redemption.card_id, Redemption.code, OfficialAccount.appid)
            .join(Event, Event.id == Redemption.event_id)
            .join(OfficialAccount, OfficialAccount.id == Event.official_account_id)
            .where(Redemption.id == redemption_id, Redemption.consume_sync == ConsumeSync.PENDING)
        ).one_or_none()
        if row is None:
            return None
        session.execute(update(Redemption).where(Redemption.id == redemption_id).values(sync_attempted_at=clock.now()))
        return _Target(row.id, row.appid, row.card_id or "", row.code)


def _send_consume(api: CardApi, target: _Target) -> ConsumeSync:
    _change_doubt(target.row_id, attempts=1, doubt=1)
    try:
        api.code_consume(target.card_id, target.code)
    except WeChatError as exc:
        if exc.errcode is None:
            raise  # no answer: the consume may or may not have happened, and stays in doubt
        _change_doubt(target.row_id, attempts=0, doubt=-1)
        if exc.errcode == ALREADY_CONSUMED:
            return _settle_consumed(target.row_id, "WeChat had the code consumed (40099) before our consume")
        if exc.errcode in _CODE_REFUSED:
            return _disagree(target.row_id, f"WeChat refused the consume: errcode {exc.errcode} {exc.errmsg}")
        raise
    with session_scope() as session:
        session.execute(
            update(Redemption)
            .where(Redemption.id == target.row_id)
            .values(consume_in_doubt=Redemption.consume_in_doubt - 1)
        )
        session.execute(
            update(Redemption)
            .where(Redemption.id == target.row_id, Redemption.consume_sync == ConsumeSync.PENDING)
            .values(consume_sync=ConsumeSync.DONE, consumed_at=clock.now())
        )
    return ConsumeSync.DONE


def _change_doubt(redemption_id: int, *, attempts: int, doubt: int) -> None:
    with session_scope() as session:
        session.execute(
            update(Redemption)
            .where(Redemption.id == redemption_id)
            .values(
                consume_attempts=Redemption.consume_attempts + attempts,
                consume_in_doubt=Redemption.consume_in_doubt + doubt,
            )
        )


def _settle_consumed(redemption_id: int, otherwise: str) -> ConsumeSync:
    """WeChat says consumed: ours if a consume of ours is in doubt, a disagreement if not."""
    with session_scope() as session:
        in_doubt = session.scalar(
            select(Redemption.consume_in_doubt).where(Redemption.id == redemption_id).with_for_update()
        )
        if in_doubt:
            session.execute(
                update(Redemption)
                .where(Redemption.id == redemption_id, Redemption.consume_sync == ConsumeSync.PENDING)
                .values(consume_sync=ConsumeSync.DONE, consumed_at=clock.now())
            )
            return ConsumeSync.DONE
        mark_consume_disagrees(session, redemption_id, otherwise)
    return ConsumeSync.DISAGREES


def _disagree(redemption_id: int, detail: str) -> ConsumeSync:
    with session_scope() as session:
        mark_consume_disagrees(session, redemption_id, detail)
    return ConsumeSync.DISAGREES


# -- code/unavailable --------------------------------------------------------------------------


def sync_revocation(ticket_id: int, api_for: ApiFor) -> ConsumeSync | None:
    """Make a revoked ticket's code unavailable in WeChat. ``UNAVAILABLE`` already (our earlier
    call went through, or ops did it) and codes WeChat no longer holds (deleted, expired, never
    received) are done; a code WeChat consumed meanwhile is a disagreement."""
    target = _start_revocation(ticket_id)
    if target is None:
        return None
    api = api_for(target.appid)
    status = _code_status(api, target)
    if status == NORMAL:
        try:
            api.code_unavailable(target.card_id, target.code, target.reason)
        except BusinessError as exc:
            if exc.errcode not in _CODE_REFUSED | {ALREADY_CONSUMED}:
                raise
            status = _code_status(api, target)  # it changed under us: decide on what it is now
        else:
            return _finish_revocation(target.row_id, ConsumeSync.DONE, "made unavailable in WeChat")
    if status == NORMAL:
        raise RuntimeError(f"code of ticket {ticket_id} still NORMAL after code/unavailable was refused")
    if status == CONSUMED:
        return _finish_revocation(target.row_id, ConsumeSync.DISAGREES, "WeChat consumed the code of a revoked ticket")
    if status == UNKNOWN_CODE:
        return _finish_revocation(target.row_id, ConsumeSync.DONE, "WeChat does not hold the code")
    if status in _GONE:
        return _finish_revocation(target.row_id, ConsumeSync.DONE, f"WeChat already has the code {status}")
    return _finish_revocation(target.row_id, ConsumeSync.DISAGREES, f"WeChat reports the code {status}")


def _start_revocation(ticket_id: int) -> _Target | None:
    with session_scope() as session:
        row = session.execute(
            select(Revocation.id, Revocation.reason, Ticket.card_id, Ticket.code, OfficialAccount.appid)
            .join(Ticket, Ticket.id == Revocation.ticket_id)
            .join(Event, Event.id == Ticket.event_id)
            .join(OfficialAccount, OfficialAccount.id == Event.official_account_id)
            .where(Revocation.ticket_id == ticket_id, Revocation.wechat_sync == ConsumeSync.PENDING)
        ).one_or_none()
        if row is None:
            return None
        if not row.code:
            session.execute(
                update(Revocation)
                .where(Revocation.id == row.id)
                .values(wechat_sync=ConsumeSync.NOT_NEEDED, detail="no code was ever known", synced_at=clock.now())
            )
            return None
        session.execute(
            update(Revocation)
            .where(Revocation.id == row.id)
            .values(attempts=Revocation.attempts + 1, sync_attempted_at=clock.now())
        )
        return _Target(row.id, row.appid, row.card_id, row.code, row.reason)


def _finish_revocation(revocation_id: int, outcome: ConsumeSync, detail: str) -> ConsumeSync:
    with session_scope() as session:
        session.execute(
            update(Revocation)
            .where(Revocation.id == revocation_id, Revocation.wechat_sync == ConsumeSync.PENDING)
            .values(wechat_sync=outcome, detail=detail, synced_at=clock.now())
        )
    if outcome == ConsumeSync.DISAGREES:
        log.warning("revocation %d disagrees with WeChat: %s", revocation_id, detail)
    return outcome


# -- the resync sweep --------------------------------------------------------------------------


def unsynced(session: Session, *, idle_for: timedelta, limit: int = 1000) -> tuple[list[int], list[int]]:
    """Redemption ids and ticket ids (of revocations) still ``pending`` that no worker has looked
    at for ``idle_for``: their message was lost (the database, not the queue, is the truth)."""
    cutoff = clock.now() - idle_for
    redemptions = session.scalars(
        select(Redemption.id)
        .where(
            Redemption.consume_sync == ConsumeSync.PENDING,
            or_(Redemption.sync_attempted_at < cutoff, Redemption.sync_attempted_at.is_(None)),
            Redemption.created_at < cutoff,
        )
        .order_by(Redemption.id)
        .limit(limit)
    ).all()
    revocations = session.scalars(
        select(Revocation.ticket_id)
        .where(
            Revocation.wechat_sync == ConsumeSync.PENDING,
            or_(Revocation.sync_attempted_at < cutoff, Revocation.sync_attempted_at.is_(None)),
            Revocation.requested_at < cutoff,
        )
        .order_by(Revocation.id)
        .limit(limit)
    ).all()
    return list(redemptions), list(revocations)
