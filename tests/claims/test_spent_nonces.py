"""Which tickets a wx.addCard attempt spent (their (timestamp, nonce) pair is used up at WeChat)."""

from __future__ import annotations

import json

from cardpipe.services.claim_results import AddCardItem, AddCardResult, spent_nonces

OUTSTANDING = {11: "nonce-a", 12: "nonce-b"}


def item(ticket_id: int, nonce: str, *, code: str | None = None, isSuccess: bool | None = None) -> AddCardItem:
    ext = json.dumps({"nonce_str": nonce, "outer_str": str(ticket_id), "timestamp": "1", "signature": "s"})
    return AddCardItem(cardId="pCard", cardExt=ext, code=code, isSuccess=isSuccess)


def test_a_cancel_naming_its_card_list_spent_exactly_those() -> None:
    result = AddCardResult(errMsg="addCard:fail cancel", cardList=[item(11, "nonce-a")])
    assert spent_nonces(result, OUTSTANDING) == {11: "nonce-a"}


def test_a_bare_failure_spent_everything_the_client_could_have_shown() -> None:
    assert spent_nonces(AddCardResult(errMsg="addCard:fail 签名错误"), OUTSTANDING) == OUTSTANDING


def test_a_partial_success_spent_only_the_failed_items() -> None:
    result = AddCardResult(
        errMsg="addCard:ok",
        cardList=[item(11, "nonce-a", code="enc", isSuccess=True), item(12, "nonce-b", isSuccess=False)],
    )
    assert spent_nonces(result, OUTSTANDING) == {12: "nonce-b"}


def test_items_naming_other_tickets_or_no_ticket_are_ignored() -> None:
    foreign = item(99, "nonce-z")
    garbage = AddCardItem(cardId="pCard", cardExt="{not json")
    result = AddCardResult(errMsg="addCard:fail cancel", cardList=[foreign, garbage])
    assert spent_nonces(result, OUTSTANDING) == {}
