"""The ticket state machine of the claim: guarded, monotonic, order-independent transitions.

Given tickets pre-issued for an order, the client callback and WeChat's ``user_get_card`` may
arrive in any order and any number of times: the first claims, the second only confirms, the
rest change nothing.
"""

from __future__ import annotations

from cardpipe.db import session_scope
from cardpipe.runtime import credential_store
from cardpipe.services import claim_ownership, claims, resign
from cardpipe.services.claim_ownership import OrderRef
from cardpipe.services.claims import ClaimOutcome, Signal
from models import Ticket, TicketState
from tests.claims.conftest import Launch


def confirm(ticket: Ticket, signal: Signal, *, code: str | None = None, oa_openid: str | None = None) -> ClaimOutcome:
    with session_scope() as session:
        return claims.confirm_claim(
            session,
            ticket_id=ticket.id,
            card_id=ticket.card_id,
            code=code or ticket.code or "",
            signal=signal,
            oa_openid=oa_openid,
        )


def test_client_first_then_wechat_each_three_times_is_one_transition_each(launch: Launch) -> None:
    # Given a served ticket
    buyer = launch.buyer()
    (ticket,) = launch.tickets(buyer)
    with session_scope() as session:
        assert claims.serve(session, [ticket.id]) == 1

    # When each signal arrives three times, the client's first
    outcomes = [confirm(ticket, Signal.CLIENT) for _ in range(3)]
    claimed_at = launch.tickets(buyer)[0].claimed_at
    outcomes += [confirm(ticket, Signal.WECHAT, oa_openid="oa-openid-1") for _ in range(3)]

    # Then the client claimed it, WeChat confirmed it, and nothing else changed
    assert outcomes == [
        ClaimOutcome.CLAIMED,
        ClaimOutcome.DUPLICATE,
        ClaimOutcome.DUPLICATE,
        ClaimOutcome.CONFIRMED,
        ClaimOutcome.DUPLICATE,
        ClaimOutcome.DUPLICATE,
    ]
    (after,) = launch.tickets(buyer)
    assert after.state == TicketState.CLAIMED
    assert after.confirmed_by_client and after.confirmed_by_wechat
    assert after.claimed_at == claimed_at and after.oa_openid == "oa-openid-1"


def test_wechat_first_then_client(launch: Launch) -> None:
    buyer = launch.buyer()
    (ticket,) = launch.tickets(buyer)

    assert confirm(ticket, Signal.WECHAT) == ClaimOutcome.CLAIMED  # straight from ready: served is not required
    assert confirm(ticket, Signal.CLIENT) == ClaimOutcome.CONFIRMED
    assert confirm(ticket, Signal.WECHAT) == ClaimOutcome.DUPLICATE

    (after,) = launch.tickets(buyer)
    assert (after.state, after.confirmed_by_wechat, after.confirmed_by_client) == (TicketState.CLAIMED, True, True)


def test_a_code_that_is_not_the_tickets_claims_nothing(launch: Launch) -> None:
    buyer = launch.buyer()
    (ticket,) = launch.tickets(buyer)

    assert confirm(ticket, Signal.CLIENT, code="NOTTHECODE22") == ClaimOutcome.UNMATCHED
    assert launch.tickets(buyer)[0].state == TicketState.READY


def test_deletion_overtaking_the_claim_leaves_the_ticket_deleted(launch: Launch) -> None:
    # Given user_del_card processed before the user_get_card that preceded it
    buyer = launch.buyer()
    (ticket,) = launch.tickets(buyer)
    with session_scope() as session:
        claims.serve(session, [ticket.id])
        assert claims.delete(session, event_id=ticket.event_id, code=ticket.code or "") == [buyer.order_id]
        assert claims.delete(session, event_id=ticket.event_id, code=ticket.code or "") == []

    # When the claim signals arrive late
    assert confirm(ticket, Signal.WECHAT, oa_openid="oa-late") == ClaimOutcome.CONFIRMED
    assert confirm(ticket, Signal.CLIENT) == ClaimOutcome.CONFIRMED

    # Then the ticket stays deleted (monotonic), with both confirmations recorded
    (after,) = launch.tickets(buyer)
    assert after.state == TicketState.DELETED and after.confirmed_by_wechat and after.confirmed_by_client
    assert after.oa_openid == "oa-late"


def test_resign_spent_replaces_only_the_nonce_that_was_used(launch: Launch) -> None:
    buyer = launch.buyer(tickets=2)
    first, second = launch.tickets(buyer)
    current = credential_store().card_ticket(launch.world.oa_appid)
    spent = {first.id: first.nonce or "", second.id: "some-older-nonce"}

    with session_scope() as session:
        resigned = resign.resign_spent(session, spent, api_ticket=current.value, version=current.version)
    with session_scope() as session:
        again = resign.resign_spent(session, spent, api_ticket=current.value, version=current.version)

    after_first, after_second = launch.tickets(buyer)
    assert resigned == [buyer.order_id] and again == []
    assert after_first.nonce != first.nonce and after_first.card_ext != first.card_ext
    assert after_second.nonce == second.nonce  # its current nonce was not the spent one


def test_the_caller_only_sees_its_own_orders(launch: Launch) -> None:
    buyer = launch.buyer()
    with session_scope() as session:
        mine = claim_ownership.owned_orders(session, OrderRef(launch.world.mp_appid, buyer.mp_openid, buyer.order_no))
        theirs = claim_ownership.owned_orders(session, OrderRef(launch.world.mp_appid, "someone-else", buyer.order_no))
        other_mp = claim_ownership.owned_orders(session, OrderRef("wxothermp00", buyer.mp_openid, buyer.order_no))
    assert [o.id for o in mine] == [buyer.order_id]
    assert theirs == [] and other_mp == []
