"""A gate's scan commits the intent to consume its ticket's WeChat code with the scan itself."""

from __future__ import annotations

import json

from sqlalchemy import select

from cardpipe.db import session_scope
from cardpipe.services import redemptions
from cardpipe.services.scan_answers import Scan
from models import OutboxMessage
from tests.redemptions.conftest import GateEvent
from workers.redemptions import consume_redeemed_code


def intent_rows() -> list[tuple[int, str, str]]:
    with session_scope() as session:
        query = select(OutboxMessage.id, OutboxMessage.actor, OutboxMessage.args).order_by(OutboxMessage.id)
        return [(row.id, row.actor, row.args) for row in session.execute(query)]


def test_an_entry_commits_one_intent_naming_the_consume_worker(gate_event: GateEvent) -> None:
    (ticket,) = gate_event.tickets(1)

    answer, intents = redemptions.redeem_and_queue(Scan(ticket.code, "north-1", "intent-scan-1"))

    ((intent_id, actor, args),) = intent_rows()
    assert actor == redemptions.CONSUME_ACTOR == consume_redeemed_code.actor_name
    assert json.loads(args) == [answer.redemption_id]
    assert [(i.id, i.actor, i.args) for i in intents] == [(intent_id, actor, [answer.redemption_id])]


def test_refusals_and_replays_commit_no_intent(gate_event: GateEvent) -> None:
    (ticket,) = gate_event.tickets(1)
    redemptions.redeem_and_queue(Scan(ticket.code, "north-1", "intent-scan-2"))

    _, replayed = redemptions.redeem_and_queue(Scan(ticket.code, "north-1", "intent-scan-2"))
    refused, again = redemptions.redeem_and_queue(Scan(ticket.code, "north-2", "intent-scan-3"))

    assert replayed == [] and again == [] and not refused.ok
    assert len(intent_rows()) == 1
