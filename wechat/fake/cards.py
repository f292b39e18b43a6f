"""Cards, their stock and deposited codes, and the cards people hold (protocol page §3.3, §4).

Every lookup is scoped to the calling official account: another OA's card or code is reported
exactly as an unknown one. Not thread-safe on its own: ``FakePlatform`` serialises access.
"""

from __future__ import annotations

import base64
import copy
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from wechat.fake.card_spec import CardSpec
from wechat.fake.errcodes import ApiError

NOT_VERIFY = "CARD_STATUS_NOT_VERIFY"
VERIFY_OK = "CARD_STATUS_VERIFY_OK"
VERIFY_FAIL = "CARD_STATUS_VERIFY_FAIL"

NORMAL = "NORMAL"
CONSUMED = "CONSUMED"
EXPIRE = "EXPIRE"
DELETE = "DELETE"
UNAVAILABLE = "UNAVAILABLE"

MAX_CODES_PER_CALL = 100
CUSTOM_CODE = re.compile(r"[0-9A-Za-z]{1,20}")


@dataclass
class Card:
    card_id: str
    oa_appid: str
    spec: CardSpec
    stock: int
    status: str = NOT_VERIFY
    deposited: list[str] = field(default_factory=list)
    issued: set[str] = field(default_factory=set)
    received_by: Counter[str] = field(default_factory=Counter)

    def undistributed_deposits(self) -> list[str]:
        return [code for code in self.deposited if code not in self.issued]


@dataclass
class UserCard:
    card_id: str
    code: str
    person: str
    openid: str
    outer_str: str
    received_at: float
    begin_time: int
    end_time: int
    status: str = NORMAL

    def effective_status(self, now: float) -> str:
        if self.status == NORMAL and now > self.end_time:
            return EXPIRE
        return self.status


def _check_batch(codes: object) -> list[str]:
    if not isinstance(codes, list) or not codes:
        raise ApiError(41011, "code")
    if len(codes) > MAX_CODES_PER_CALL:
        raise ApiError(40109)
    return codes


class CardStore:
    def __init__(self) -> None:
        self.cards: dict[str, Card] = {}
        self.user_cards: dict[tuple[str, str], UserCard] = {}
        self._generated: dict[str, str] = {}
        self._encrypted: dict[str, tuple[str, str]] = {}

    def create(self, oa_appid: str, spec: CardSpec) -> Card:
        card_id = "p" + secrets.token_urlsafe(21)[:27]
        card = Card(card_id, oa_appid, spec, stock=spec.quantity)
        self.cards[card_id] = card
        return card

    def get(self, card_id: str) -> Card:
        card = self.cards.get(card_id)
        if card is None:
            raise ApiError(40073)
        return card

    def card_of(self, oa_appid: str, card_id: object) -> Card:
        if not card_id:
            raise ApiError(41012)
        card = self.get(str(card_id))
        if card.oa_appid != oa_appid:
            raise ApiError(45030)
        return card

    def view(self, card: Card) -> dict[str, Any]:
        inner = copy.deepcopy(card.spec.body)
        base_info = inner["base_info"]
        base_info.update(
            id=card.card_id,
            status=card.status,
            sku={"quantity": card.stock, "total_quantity": card.stock + len(card.issued)},
        )
        return {"card_type": card.spec.card_type, card.spec.inner_key: inner}

    def modify_stock(self, card: Card, increase: int, reduce: int) -> None:
        stock = card.stock + increase - reduce
        if stock < 0:
            raise ApiError(40122, "stock would go below 0")
        if card.spec.deposit and stock > len(card.undistributed_deposits()):
            raise ApiError(40122, "stock exceeds the deposited codes not yet distributed")
        card.stock = stock

    def deposit(self, card: Card, codes: object) -> dict[str, list[str]]:
        batch = _check_batch(codes)
        if not card.spec.deposit:
            raise ApiError(40097, "card is not in deposit mode")
        if card.status != VERIFY_OK:
            raise ApiError(40078, "codes can be deposited only after the card passed audit")
        known = set(card.deposited)
        result: dict[str, list[str]] = {"succ_code": [], "duplicate_code": [], "fail_code": []}
        for raw in batch:
            code = raw if isinstance(raw, str) else str(raw)
            if not CUSTOM_CODE.fullmatch(code):
                result["fail_code"].append(code)
            elif code in known:
                result["duplicate_code"].append(code)
            else:
                known.add(code)
                card.deposited.append(code)
                result["succ_code"].append(code)
        return result

    def check(self, card: Card, codes: object) -> tuple[list[str], list[str]]:
        batch = [str(c) for c in _check_batch(codes)]
        known = set(card.deposited)
        return [c for c in batch if c in known], [c for c in batch if c not in known]

    def user_card(self, oa_appid: str, card_id: object, code: object) -> UserCard:
        if not code:
            raise ApiError(41011, "code")
        code = str(code)
        if not card_id:
            card_id = self._generated.get(code)
            if card_id is None:
                held = any(c == code and self.cards[k].oa_appid == oa_appid for k, c in self.user_cards)
                raise ApiError(41012 if held else 40056)
        user_card = self.user_cards.get((str(card_id), code))
        if user_card is None or self.cards[user_card.card_id].oa_appid != oa_appid:
            raise ApiError(40056)
        return user_card

    @staticmethod
    def require_usable(user_card: UserCard, now: float) -> None:
        status = user_card.effective_status(now)
        if status == CONSUMED:
            raise ApiError(40099)
        if status != NORMAL:
            raise ApiError(40127, status)

    def code_view(self, user_card: UserCard, now: float, check_consume: bool) -> dict[str, Any]:
        if check_consume:
            self.require_usable(user_card, now)
        status = user_card.effective_status(now)
        return {
            "card": {
                "card_id": user_card.card_id,
                "begin_time": user_card.begin_time,
                "end_time": user_card.end_time,
            },
            "openid": user_card.openid,
            "can_consume": status == NORMAL,
            "user_card_status": status,
            "outer_str": user_card.outer_str,
        }

    def decrypt(self, oa_appid: str, encrypt_code: object) -> str:
        target = self._encrypted.get(str(encrypt_code or ""))
        if target is None or self.cards[target[0]].oa_appid != oa_appid:
            raise ApiError(40056)
        return target[1]

    def new_generated_code(self) -> str:
        while True:
            code = str(secrets.randbelow(9 * 10**11) + 10**11)
            if code not in self._generated:
                return code

    def receive(
        self, card: Card, code: str, *, person: str, openid: str, outer_str: str, now: float
    ) -> tuple[UserCard, str]:
        """Give ``code`` of ``card`` to a person: stock −1. Returns the card and its encrypted code."""
        begin, end = card.spec.validity(now)
        user_card = UserCard(card.card_id, code, person, openid, outer_str, now, begin, end)
        self.user_cards[(card.card_id, code)] = user_card
        if not card.spec.use_custom_code:
            self._generated[code] = card.card_id
        card.issued.add(code)
        card.received_by[person] += 1
        card.stock -= 1
        encrypted = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
        self._encrypted[encrypted] = (card.card_id, code)
        return user_card, encrypted
