"""The simulated ``wx.addCard`` (protocol page §5, §6.1): the checks WeChat makes on each
``{cardId, cardExt}`` before a person receives the card.

A batch is all-or-nothing: every item is checked first, then all are issued in one step. The
``_fake`` field of the answer is a test diagnostic, not part of WeChat's: the machine-readable
``reason`` of a failure, and for a success which ticket (``current`` / ``previous``) each
signature matched.
"""

from __future__ import annotations

import hmac
import json
import random
from dataclasses import dataclass
from typing import Any

from wechat.fake.accounts import Person, Registry
from wechat.fake.cards import CUSTOM_CODE, VERIFY_OK, Card, CardStore
from wechat.fake.credentials import TicketMatch, TicketStore
from wechat.fake.errcodes import ApiError
from wechat.fake.push_crypto import sha1_sorted
from wechat.pushes import UserGetCard

#: What the person sees for each failure class (protocol page §5.4).
_USER_TEXT = {40080: "参数错误", 40078: "卡券未审核", 45031: "已领完", 45033: "领取次数已达上限", 40116: "已领取"}
_SIGNATURE_REASONS = {"signature_mismatch", "ticket_expired"}
UsedPairs = set[tuple[str, str, str]]
MAX_NONCE_LENGTH = 32
SIGNED_EXT_FIELDS = ("code", "openid", "timestamp", "nonce_str")


def expected_signature(api_ticket: str, card_id: str, ext: dict[str, Any]) -> str:
    """WeChat's check, restated here rather than imported from ``wechat.signing`` so that the
    fake catches a bug there: sign exactly the signed fields present in cardExt (§5.2)."""
    values = [str(ext[name]) for name in SIGNED_EXT_FIELDS if ext.get(name) not in (None, "")]
    return sha1_sorted(api_ticket, card_id, *values)


class AddCardFailure(Exception):
    def __init__(self, errcode: int, reason: str, index: int) -> None:
        super().__init__(reason)
        self.errcode = errcode
        self.reason = reason
        self.index = index

    def body(self) -> dict[str, Any]:
        text = "签名错误" if self.reason in _SIGNATURE_REASONS else _USER_TEXT.get(self.errcode, "fail")
        return {
            "errMsg": f"addCard:fail {text} ({self.reason})",
            "errcode": self.errcode,
            "_fake": {"reason": self.reason, "index": self.index},
        }


@dataclass
class _Planned:
    card: Card
    card_ext: str
    code: str | None
    outer_str: str
    pair: tuple[str, str, str]
    ticket: TicketMatch


def _parse_ext(raw: object, index: int) -> dict[str, Any]:
    if not isinstance(raw, str):
        raise AddCardFailure(40080, "card_ext_not_string", index)
    try:
        ext = json.loads(raw)
    except ValueError:
        raise AddCardFailure(40080, "card_ext_not_json", index) from None
    if not isinstance(ext, dict):
        raise AddCardFailure(40080, "card_ext_not_object", index)
    return ext


def _text(ext: dict[str, Any], name: str) -> str | None:
    value = ext.get(name)
    return None if value in (None, "") else str(value)


def _timestamp(ext: dict[str, Any], index: int) -> str:
    value = ext.get("timestamp")
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise AddCardFailure(40080, "bad_timestamp", index)
    return str(value)


class AddCardSession:
    """One ``wx.addCard`` by ``person`` inside mini program ``mp_appid``."""

    def __init__(
        self,
        *,
        registry: Registry,
        tickets: TicketStore,
        cards: CardStore,
        used_pairs: UsedPairs,
        person: Person,
        mp_appid: str,
        now: float,
    ) -> None:
        self._registry = registry
        self._tickets = tickets
        self._cards = cards
        self._used_pairs = used_pairs
        self._person = person
        self._mp = registry.mp(mp_appid)
        self._now = now

    def cancel(self, items: list[Any]) -> dict[str, Any]:
        """The person opened the card page and backed out: the (timestamp, nonce) pairs are spent."""
        for item in items:
            try:
                card = self._cards.get(str(item["cardId"]))
                ext = _parse_ext(item["cardExt"], 0)
                self._used_pairs.add((card.oa_appid, _timestamp(ext, 0), _text(ext, "nonce_str") or ""))
            except (TypeError, KeyError, ApiError, AddCardFailure):
                continue  # an unusable item never reached the card page
        return {"errMsg": "addCard:fail cancel"}

    def add(self, items: list[Any]) -> tuple[dict[str, Any], list[tuple[str, UserGetCard]]]:
        """The wx.addCard answer and the ``user_get_card`` events to push, per OA appid."""
        if not items:
            return AddCardFailure(40080, "empty_card_list", 0).body(), []
        planned: list[_Planned] = []
        try:
            for index, item in enumerate(items):
                planned.append(self._plan(item, index, planned))
        except AddCardFailure as failure:
            return failure.body(), []
        return self._commit(planned)

    def _plan(self, item: Any, index: int, earlier: list[_Planned]) -> _Planned:
        if not isinstance(item, dict) or not isinstance(item.get("cardId"), str):
            raise AddCardFailure(40080, "item_needs_cardId_and_cardExt", index)
        card = self._cards.cards.get(item["cardId"])
        if card is None:
            raise AddCardFailure(40073, "unknown_card", index)
        if card.oa_appid != self._mp.oa_appid:
            raise AddCardFailure(48001, "mini_program_not_bound_to_card_oa", index)
        ext = _parse_ext(item.get("cardExt"), index)
        if card.status != VERIFY_OK and not self._registry.is_whitelisted(card.oa_appid, self._person.name):
            raise AddCardFailure(40078, "card_not_approved", index)
        timestamp = _timestamp(ext, index)
        nonce = _text(ext, "nonce_str") or ""
        if len(nonce) > MAX_NONCE_LENGTH:
            raise AddCardFailure(40080, "nonce_too_long", index)
        code = self._check_code(card, _text(ext, "code"), index)
        self._check_openid(card, _text(ext, "openid"), index)
        ticket = self._check_signature(card, ext, index)

        same_card = [p for p in earlier if p.card is card]
        pair = (card.oa_appid, timestamp, nonce)
        if pair in self._used_pairs or any(p.pair == pair for p in earlier):
            raise AddCardFailure(40080, "nonce_reused", index)
        if card.stock - len(same_card) <= 0:
            raise AddCardFailure(45031, "stock_empty", index)
        if card.received_by[self._person.name] + len(same_card) >= card.spec.get_limit:
            raise AddCardFailure(45033, "get_limit_reached", index)
        if code is not None and (code in card.issued or any(p.code == code for p in same_card)):
            raise AddCardFailure(40116, "code_already_received", index)
        if card.spec.deposit:
            taken = {p.code for p in same_card}
            left = [c for c in card.undistributed_deposits() if c not in taken]
            if not left:
                raise AddCardFailure(45031, "no_deposited_code_left", index)
            code = random.choice(left)
        outer_str = _text(ext, "outer_str") or ""
        return _Planned(card, item["cardExt"], code, outer_str, pair, ticket)

    def _check_code(self, card: Card, code: str | None, index: int) -> str | None:
        wants_code = card.spec.use_custom_code and not card.spec.deposit
        if wants_code and code is None:
            raise AddCardFailure(40080, "code_missing", index)
        if not wants_code and code is not None:
            raise AddCardFailure(40080, "code_not_allowed", index)
        if code is not None and not CUSTOM_CODE.fullmatch(code):
            raise AddCardFailure(40080, "bad_code", index)
        return code

    def _check_openid(self, card: Card, openid: str | None, index: int) -> None:
        if not card.spec.bind_openid:
            if openid is not None:
                raise AddCardFailure(40080, "openid_not_allowed", index)
            return
        if openid is None:
            raise AddCardFailure(40080, "openid_missing", index)
        if openid != self._registry.openid(self._person.name, card.oa_appid):
            raise AddCardFailure(40080, "openid_mismatch", index)

    def _check_signature(self, card: Card, ext: dict[str, Any], index: int) -> TicketMatch:
        given = ext.get("signature")
        if not isinstance(given, str) or not given:
            raise AddCardFailure(40080, "signature_missing", index)

        def verifies(ticket: str) -> bool:
            return hmac.compare_digest(expected_signature(ticket, card.card_id, ext).encode(), given.encode())

        match = self._tickets.match(card.oa_appid, self._now, verifies)
        if match is None:
            raise AddCardFailure(40080, "signature_mismatch", index)
        if match == "expired":
            raise AddCardFailure(40080, "ticket_expired", index)
        return match

    def _commit(self, planned: list[_Planned]) -> tuple[dict[str, Any], list[tuple[str, UserGetCard]]]:
        create_time = int(self._now)
        answer: list[dict[str, Any]] = []
        events: list[tuple[str, UserGetCard]] = []
        for item in planned:
            card = item.card
            code = item.code if item.code is not None else self._cards.new_generated_code()
            openid = self._registry.openid(self._person.name, card.oa_appid)
            self._used_pairs.add(item.pair)
            _, encrypted = self._cards.receive(
                card, code, person=self._person.name, openid=openid, outer_str=item.outer_str, now=self._now
            )
            answer.append({"cardId": card.card_id, "cardExt": item.card_ext, "code": encrypted, "isSuccess": True})
            event = UserGetCard(
                to_user=self._registry.oa(card.oa_appid).original_id,
                from_user=openid,
                create_time=create_time,
                card_id=card.card_id,
                code=code,
                outer_str=item.outer_str,
                union_id=self._person.unionid,
                is_give_by_friend=False,
            )
            events.append((card.oa_appid, event))
        body = {"errMsg": "addCard:ok", "cardList": answer, "_fake": {"tickets": [p.ticket for p in planned]}}
        return body, events
