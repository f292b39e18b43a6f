"""WeChat's side of the stock: a card's current stock, and depositing codes for deposit-mode cards.

Both are resumable: they start from what WeChat reports, so a crashed run is finished, not repeated.
"""

from __future__ import annotations

from collections.abc import Callable

from cardpipe.services.preissue import PreissueError
from wechat.client import MAX_CODES_PER_CALL, CardApi

#: Deposit calls in a row that add no new code before the planner gives up.
MAX_FRUITLESS_DEPOSITS = 5


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
