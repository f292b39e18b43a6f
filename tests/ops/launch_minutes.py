"""A scripted few minutes of launch traffic for the ops charts: rows written with the times they
would have had, then the sampler driven with a controllable clock at each minute's end (no test
waits for a real minute)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from cardpipe.outbound import ERRCODE_COUNTER_PREFIX, stats_key
from cardpipe.services import ops_history
from cardpipe.services.checkin.lists import default_list
from cardpipe.services.queues import QueueMonitor
from models import (
    Credential,
    CredentialKind,
    Event,
    MiniProgram,
    OfficialAccount,
    Order,
    Presence,
    Redemption,
    RedemptionResult,
    Ticket,
    TicketState,
)
from workers.broker import broker

APPID = "wxopscharts01"


@dataclass(frozen=True)
class MinuteScript:
    """What happens in one minute: claims (each at the minute's first second), the WeChat
    confirmations among them (their lags in seconds, under a minute), ok redemptions, and 40001
    answers from WeChat."""

    claims: int
    confirmation_lags_s: tuple[float, ...]
    redemptions: int
    errcode_40001: int


#: Three minutes of a launch: claims rising, confirmations trailing, the first entries.
SCRIPT = (
    MinuteScript(claims=2, confirmation_lags_s=(1.0,), redemptions=0, errcode_40001=0),
    MinuteScript(claims=5, confirmation_lags_s=(2.0, 4.0, 30.0), redemptions=1, errcode_40001=3),
    MinuteScript(claims=9, confirmation_lags_s=(3.0, 3.0, 5.0, 8.0, 50.0), redemptions=2, errcode_40001=1),
)


@dataclass(frozen=True)
class Launch:
    event_id: int
    #: End of each scripted minute (epoch seconds), oldest first.
    minute_ends: list[int]


def seed_event(session: Session, tickets: int) -> tuple[int, list[int]]:
    """An account with credentials, an event and ``tickets`` ready tickets; returns their ids."""
    oa = OfficialAccount(appid=APPID, app_secret="secret-value", server_token="tok")
    session.add(oa)
    session.flush()
    mp = MiniProgram(appid="wxopschartsmp", app_secret="secret-value", official_account_id=oa.id)
    session.add(mp)
    session.flush()
    now = datetime.now(UTC)
    session.add_all(
        [
            Credential(
                official_account_id=oa.id,
                kind=CredentialKind.ACCESS_TOKEN,
                value="token-value",
                version=1,
                expires_at=now + timedelta(minutes=90),
                rotated_at=now - timedelta(minutes=30),
            ),
            Credential(
                official_account_id=oa.id,
                kind=CredentialKind.CARD_TICKET,
                value="ticket-value",
                version=4,
                expires_at=now + timedelta(minutes=100),
                rotated_at=now - timedelta(minutes=20),
            ),
        ]
    )
    event = Event(name="Launch Expo", official_account_id=oa.id, mini_program_id=mp.id, card_id="pOPSCHARTS")
    session.add(event)
    session.flush()
    ids = []
    for seq in range(1, tickets + 1):
        order = Order(event_id=event.id, order_no=f"L{seq}", mp_openid="oMP", ticket_count=1)
        session.add(order)
        session.flush()
        ticket = Ticket(
            event_id=event.id, order_id=order.id, seq=1, card_id="pOPSCHARTS", code=f"L{seq:04d}", state="ready"
        )
        session.add(ticket)
        session.flush()
        ids.append(ticket.id)
    session.commit()
    return event.id, ids


def play(session: Session, *, now: float) -> Launch:
    """Write :data:`SCRIPT`'s minutes (the last one ending at the minute boundary before ``now``)
    and sample each at its end, as the scheduler would have."""
    total = sum(minute.claims for minute in SCRIPT)
    event_id, ticket_ids = seed_event(session, total + 5)
    last_end = ops_history.minute_of(now)
    ends = [last_end - 60 * (len(SCRIPT) - 1 - i) for i in range(len(SCRIPT))]
    monitor = QueueMonitor(broker)
    redis = broker.client
    gate_list = default_list(session, event_id)
    pending = iter(ticket_ids)
    for minute, end in zip(SCRIPT, ends, strict=True):
        start = datetime.fromtimestamp(end - 60, UTC)
        claimed = [next(pending) for _ in range(minute.claims)]
        for ticket_id in claimed:
            ticket = session.get(Ticket, ticket_id)
            assert ticket is not None
            ticket.state = TicketState.CLAIMED
            ticket.confirmed_by_client = True
            ticket.claimed_at = start + timedelta(seconds=1)
        for ticket_id, lag in zip(claimed, minute.confirmation_lags_s, strict=False):
            ticket = session.get(Ticket, ticket_id)
            assert ticket is not None
            ticket.confirmed_by_wechat = True
            ticket.confirmed_at = start + timedelta(seconds=1 + lag)
        for ticket_id in claimed[: minute.redemptions]:
            ticket = session.get(Ticket, ticket_id)
            assert ticket is not None
            ticket.state = TicketState.REDEEMED
            session.add(
                Redemption(
                    nonce=f"n-{ticket_id}",
                    code=ticket.code or "",
                    card_id=ticket.card_id,
                    event_id=event_id,
                    ticket_id=ticket_id,
                    gate="G1",
                    result=RedemptionResult.OK,
                    created_at=start + timedelta(seconds=30),
                )
            )
            session.add(Presence(ticket_id=ticket_id, list_id=gate_list.id, event_id=event_id, inside=True, entries=1))
        session.commit()
        if minute.errcode_40001:
            redis.hincrby(stats_key(APPID), f"{ERRCODE_COUNTER_PREFIX}40001", minute.errcode_40001)
        assert ops_history.record_sample(session, redis, monitor, now=end + 1)
    return Launch(event_id=event_id, minute_ends=ends)
