"""Every cardExt pre-issue produces is accepted by the fake's simulated ``wx.addCard``: a sample of
1,200 from a larger event and every ticket of a small one, in custom-code and deposit mode."""

from __future__ import annotations

import random
import uuid
from typing import Any

from sqlalchemy import func, select

from cardpipe.db import session_scope
from cardpipe.runtime import credential_store
from cardpipe.services.preissue.planner import plan_preissue
from cardpipe.services.preissue.stock import card_stock, deposit_codes
from models import CodeMode, Ticket
from tests.preissue.conftest import IssueAll, Organiser, event_row, tickets_of

#: Cards per wx.addCard call, and per person (the test cards' get_limit is 100).
BATCH = 100


def _add_all(organiser: Organiser, tickets: list[Ticket]) -> list[dict[str, object]]:
    """wx.addCard every ticket, BATCH at a time, each batch by a new person; the answers."""
    answers = []
    for start in range(0, len(tickets), BATCH):
        person = f"holder-{uuid.uuid4().hex[:10]}"
        organiser.fake.add_person(person)
        batch = [{"cardId": t.card_id, "cardExt": t.card_ext} for t in tickets[start : start + BATCH]]
        answers.append(organiser.fake.add_card(person, organiser.world.mp_appid, batch))
    return answers


def _accepted(answers: list[dict[str, Any]]) -> int:
    for answer in answers:
        assert answer["errMsg"] == "addCard:ok", answer
    return sum(len(answer["cardList"]) for answer in answers)


def test_a_sample_of_a_large_event_and_all_of_a_small_one_are_accepted(
    organiser: Organiser, issue_all: IssueAll
) -> None:
    # Given a 6,000-ticket event and a 45-ticket one, pre-issued
    large = organiser.create_event()
    organiser.import_orders(large, 3_000, tickets=2)
    small = organiser.create_event()
    organiser.import_orders(small, 15, tickets=3, start=90_000)
    issue_all(large)
    issue_all(small)

    with session_scope() as session:
        sample = random.Random(7).sample(tickets_of(session, large), 1_200)
        everything = tickets_of(session, small)

    # Then WeChat accepts every one of them, each with the code it was issued with
    assert _accepted(_add_all(organiser, sample)) == 1_200
    assert _accepted(_add_all(organiser, everything)) == 45
    for ticket in sample[:50]:
        held = credential_store().card_api(organiser.world.oa_appid).code_get(ticket.card_id, ticket.code or "")
        assert held.outer_str == str(ticket.id)


def test_deposit_mode_codes_are_deposited_and_checked_and_every_card_ext_is_accepted(
    organiser: Organiser, issue_all: IssueAll
) -> None:
    # Given a deposit-mode event of 250 tickets
    event_id = organiser.create_event(mode=CodeMode.DEPOSIT)
    organiser.import_orders(event_id, 125, tickets=2)

    # When it is pre-issued (twice: the second run changes nothing at WeChat)
    issue_all(event_id)
    calls_before = dict(organiser.fake.stats()["calls_by_appid"][organiser.world.oa_appid])
    issue_all(event_id)
    calls_after = organiser.fake.stats()["calls_by_appid"][organiser.world.oa_appid]

    # Then 250 codes were deposited 100 per call, each batch checked, and the stock is 250
    assert calls_before["/card/code/deposit"] == 3 and calls_before["/card/code/checkcode"] == 3
    assert calls_after["/card/code/deposit"] == 3 and calls_after.get("/card/modifystock") == 1
    with session_scope() as session:
        card_id = event_row(session, event_id).card_id or ""
        tickets = tickets_of(session, event_id)
    api = credential_store().card_api(organiser.world.oa_appid)
    assert api.deposit_count(card_id) == 250
    assert card_stock(api, card_id) == 250

    # And the tickets carry no code, in the database or in their cardExt, and all are accepted
    assert len(tickets) == 250 and all(t.code is None and '"code"' not in (t.card_ext or "") for t in tickets)
    assert _accepted(_add_all(organiser, tickets)) == 250
    assert card_stock(api, card_id) == 0


def test_a_deposit_interrupted_half_way_is_finished_not_repeated(organiser: Organiser) -> None:
    # Given 150 of 400 codes already deposited by a crashed planner
    event_id = organiser.create_event(mode=CodeMode.DEPOSIT)
    organiser.import_orders(event_id, 400)
    with session_scope() as session:
        card_id = event_row(session, event_id).card_id or ""
    api = credential_store().card_api(organiser.world.oa_appid)
    from cardpipe.services.codes import new_codes

    deposit_codes(api, card_id, 150, lambda n: new_codes(n, 12, "23456789ABCDEFGHJKMNPQRSTUVWXYZ"))

    # When the planner runs
    outcome = plan_preissue(
        event_id,
        sessions=session_scope,
        card_api=credential_store().card_api,
        send_chunk=lambda *_: None,
        chunk_tickets=1_000,
    )

    # Then it deposits only the 250 missing and sets the stock to the 400 deposited
    assert outcome.codes_deposited == 250
    assert api.deposit_count(card_id) == 400 and card_stock(api, card_id) == 400
    with session_scope() as session:
        assert session.scalar(select(func.count()).where(Ticket.event_id == event_id)) == 0
