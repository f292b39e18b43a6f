"""The fake platform's state: every store behind one lock, the clock, the configuration, and the
operations the control API drives (registering apps and people, card audits, the simulated
``wx.addCard``, a person deleting or the back office consuming a card, credential faults).

Pure: nothing here does I/O. Operations that would make WeChat push an event return it in an
``Outcome`` for the caller to hand to the pusher.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field, fields
from typing import Any

from wechat.fake.accounts import AccountSettings, InvalidSetup, MiniProgram, OfficialAccount, Registry, UnknownEntity
from wechat.fake.addcard import AddCardSession, UsedPairs
from wechat.fake.card_spec import parse_card
from wechat.fake.cards import CONSUMED, DELETE, VERIFY_FAIL, VERIFY_OK, Card, CardStore, UserCard
from wechat.fake.clock import OffsetClock
from wechat.fake.credentials import TicketStore, TokenStore
from wechat.fake.errcodes import ApiError
from wechat.fake.faults import DailyQuotas
from wechat.fake.pusher import PushTarget
from wechat.pushes import CardEvent, CardNotPassCheck, CardPassCheck, EventHeader, UserConsumeCard, UserDelCard

TICKET_TYPES = ("wx_card", "jsapi")


@dataclass
class FakeConfig:
    token_ttl_s: float = 7200.0
    ticket_ttl_s: float = 7200.0
    #: How long a superseded /cgi-bin/token token keeps working (WeChat: 5 minutes).
    token_grace_s: float = 300.0
    #: Default grace of the previous ticket on a forced rotation (an assumption, §2).
    ticket_rotate_grace_s: float = 300.0
    login_code_ttl_s: float = 300.0


@dataclass
class Outcome:
    body: dict[str, Any]
    pushes: list[tuple[PushTarget, CardEvent]] = field(default_factory=list)


class FakePlatform:
    def __init__(self, config: FakeConfig | None = None, clock: OffsetClock | None = None) -> None:
        self.config = config or FakeConfig()
        self.clock = clock or OffsetClock()
        self.lock = threading.RLock()
        self._build()

    def _build(self) -> None:
        self.registry = Registry()
        self.tokens = TokenStore(self.config.token_ttl_s, self.config.token_grace_s)
        self.tickets = {kind: TicketStore(self.config.ticket_ttl_s) for kind in TICKET_TYPES}
        self.cards = CardStore()
        self.quotas = DailyQuotas()
        self.used_pairs: UsedPairs = set()
        self.clear_quota_uses: dict[tuple[str, str], int] = {}

    def now(self) -> float:
        return self.clock.now()

    def reset(self) -> None:
        with self.lock:
            self._build()

    def configure(self, **changes: float) -> FakeConfig:
        known = {f.name for f in fields(FakeConfig)}
        with self.lock:
            for name, value in changes.items():
                if name not in known:
                    raise InvalidSetup(f"unknown setting {name}")
                setattr(self.config, name, value)
            self.tokens.ttl_s = self.config.token_ttl_s
            self.tokens.grace_s = self.config.token_grace_s
            for store in self.tickets.values():
                store.ttl_s = self.config.ticket_ttl_s
            return self.config

    # --- used by the API operations -------------------------------------------------------

    def authorize(self, access_token: str | None, endpoint: str) -> OfficialAccount:
        """The OA owning a valid ``access_token``, charging its daily quota for ``endpoint``."""
        if not access_token:
            raise ApiError(41001)
        now = self.now()
        appid = self.tokens.check(access_token, now)
        oa = self.registry.oas.get(appid)
        if oa is None:
            raise ApiError(48001, "not an official account token")
        self.quotas.charge(appid, endpoint, now)
        if endpoint.startswith("/card/"):
            self.require_card_feature(oa)
        return oa

    @staticmethod
    def require_card_feature(oa: OfficialAccount) -> None:
        """48001 for the card API of an account without the card (卡券) feature."""
        if not oa.settings.card_feature:
            raise ApiError(48001, "the account has no card feature")

    def require_custom_code(self, oa: OfficialAccount, card_id: object) -> None:
        """43009 for a code call on a custom-code card of an account without custom-code
        permission (an assumption: WeChat documents 43009 but not which calls answer it)."""
        card = self.cards.cards.get(str(card_id)) if card_id else None
        custom = card is not None and card.oa_appid == oa.appid and card.spec.use_custom_code
        if custom and not oa.settings.custom_code:
            raise ApiError(43009)

    def push_target(self, oa_appid: str) -> PushTarget:
        oa = self.registry.oa(oa_appid)
        return PushTarget(oa.appid, oa.push_url, oa.token, oa.encoding_aes_key, oa.safe_mode)

    def _push(self, oa_appid: str, event: CardEvent) -> tuple[PushTarget, CardEvent]:
        return self.push_target(oa_appid), event

    # --- control operations ---------------------------------------------------------------

    def register_oa(
        self,
        appid: str,
        secret: str,
        token: str,
        *,
        encoding_aes_key: str | None = None,
        push_url: str | None = None,
        safe_mode: bool = False,
        original_id: str | None = None,
    ) -> OfficialAccount:
        """Add or reconfigure an OA; its tokens, tickets and cards are kept."""
        oa = OfficialAccount(
            appid, secret, token, encoding_aes_key, push_url, safe_mode, original_id or f"gh_{appid[-12:]}"
        )
        with self.lock:
            self.registry.put_oa(oa)
        return oa

    def register_mp(self, appid: str, secret: str, oa_appid: str | None) -> MiniProgram:
        with self.lock:
            mp = MiniProgram(appid, secret, oa_appid)
            self.registry.put_mp(mp)
            return mp

    def add_person(self, name: str, unionid: str | None = None) -> dict[str, Any]:
        with self.lock:
            self.registry.put_person(name, unionid)
            return self.person_view(name)

    def person_view(self, name: str) -> dict[str, Any]:
        with self.lock:
            person = self.registry.person(name)
            apps = [*self.registry.oas, *self.registry.mps]
            openids = {appid: self.registry.openid(name, appid) for appid in apps}
            return {"name": name, "unionid": person.unionid, "openids": openids}

    def set_account(self, appid: str, **changes: Any) -> dict[str, Any]:
        """Change an OA's back-office settings (``AccountSettings`` fields); others are kept."""
        known = {f.name for f in fields(AccountSettings)}
        with self.lock:
            oa = self.registry.oa(appid)
            for name, value in changes.items():
                if name not in known:
                    raise InvalidSetup(f"unknown account setting {name}")
                setattr(oa.settings, name, value)
            return vars(oa.settings).copy()

    def edit_card(self, card_id: str, base_info: dict[str, Any]) -> dict[str, Any]:
        """The organiser edits the card in the back office (or with ``/card/update``): the given
        ``base_info`` fields replace the card's. Fields that decide codes cannot change."""
        frozen = {"use_custom_code", "get_custom_code_mode", "bind_openid", "sku"}
        with self.lock:
            card = self._card(card_id)
            refused = frozen.intersection(base_info)
            if refused:
                raise InvalidSetup(f"{', '.join(sorted(refused))} cannot change after creation")
            body = copy.deepcopy(card.spec.body)
            body["base_info"].update(base_info)
            card.spec = parse_card({"card": {"card_type": card.spec.card_type, card.spec.inner_key: body}})
            return self.cards.view(card)

    def login(self, person: str, mp_appid: str) -> str:
        with self.lock:
            return self.registry.issue_login_code(person, mp_appid, self.now() + self.config.login_code_ttl_s)

    def whitelist(self, oa_appid: str, person: str) -> None:
        with self.lock:
            self.registry.whitelist(oa_appid, person)

    def review_card(self, card_id: str, approve: bool, reason: str = "") -> Outcome:
        with self.lock:
            card = self._card(card_id)
            card.status = VERIFY_OK if approve else VERIFY_FAIL
            common: EventHeader = {
                "to_user": self.registry.oa(card.oa_appid).original_id,
                "from_user": self.registry.system_openid(card.oa_appid),
                "create_time": int(self.now()),
                "card_id": card_id,
            }
            event = CardPassCheck(**common) if approve else CardNotPassCheck(**common, refuse_reason=reason)
            return Outcome({"card_id": card_id, "status": card.status}, [self._push(card.oa_appid, event)])

    def card_state(self, card_id: str) -> dict[str, Any]:
        with self.lock:
            card = self._card(card_id)
            now = self.now()
            holders = [
                {"code": uc.code, "person": uc.person, "openid": uc.openid, "status": uc.effective_status(now)}
                for (cid, _), uc in self.cards.user_cards.items()
                if cid == card_id
            ]
            return {
                "card_id": card_id,
                "oa_appid": card.oa_appid,
                "status": card.status,
                "stock": card.stock,
                "deposited": list(card.deposited),
                "user_cards": holders,
            }

    def add_card(self, person: str, mp_appid: str, items: list[Any], *, cancel: bool = False) -> Outcome:
        with self.lock:
            session = AddCardSession(
                registry=self.registry,
                tickets=self.tickets["wx_card"],
                cards=self.cards,
                used_pairs=self.used_pairs,
                person=self.registry.person(person),
                mp_appid=mp_appid,
                now=self.now(),
            )
            if cancel:
                return Outcome(session.cancel(items))
            body, events = session.add(items)
            return Outcome(body, [self._push(appid, event) for appid, event in events])

    def user_delete(self, card_id: str, code: str) -> Outcome:
        """The holder deletes the card in WeChat: status DELETE, ``user_del_card`` pushed."""
        with self.lock:
            user_card = self._user_card(card_id, code)
            user_card.status = DELETE
            event = UserDelCard(**self._user_event(user_card), code=code)
            return Outcome({"status": DELETE}, [self._push(self.cards.cards[card_id].oa_appid, event)])

    def back_office_consume(
        self, card_id: str, code: str, *, location_name: str = "", staff_open_id: str = ""
    ) -> Outcome:
        """Consumed in the WeChat back office / 卡券助手: ``user_consume_card`` FROM_MP."""
        with self.lock:
            user_card = self._user_card(card_id, code)
            self.cards.require_usable(user_card, self.now())
            user_card.status = CONSUMED
            event = UserConsumeCard(
                **self._user_event(user_card),
                code=code,
                consume_source="FROM_MP",
                location_name=location_name,
                staff_open_id=staff_open_id,
            )
            return Outcome({"status": CONSUMED}, [self._push(self.cards.cards[card_id].oa_appid, event)])

    def invalidate_tokens(self, appid: str) -> int:
        with self.lock:
            return self.tokens.invalidate_all(appid, self.now())

    def rotate_ticket(self, appid: str, grace_s: float | None = None) -> dict[str, Any]:
        with self.lock:
            self.registry.oa(appid)
            grace = self.config.ticket_rotate_grace_s if grace_s is None else grace_s
            ticket = self.tickets["wx_card"].rotate(appid, self.now(), grace)
            return {"ticket": ticket.value, "expires_in": ticket.remaining(self.now())}

    def ticket_history(self, appid: str) -> list[dict[str, Any]]:
        with self.lock:
            now = self.now()
            return [
                {"ticket": t.value, "alive": t.alive(now), "expires_at": t.expires_at, "dead_at": t.dead_at}
                for t in self.tickets["wx_card"].peek(appid)
            ]

    def _card(self, card_id: str) -> Card:
        card = self.cards.cards.get(card_id)
        if card is None:
            raise UnknownEntity(f"card {card_id}")
        return card

    def _user_card(self, card_id: str, code: str) -> UserCard:
        user_card = self.cards.user_cards.get((card_id, code))
        if user_card is None:
            raise UnknownEntity(f"code {code} of card {card_id}")
        return user_card

    def _user_event(self, user_card: UserCard) -> dict[str, Any]:
        oa_appid = self.cards.cards[user_card.card_id].oa_appid
        return {
            "to_user": self.registry.oa(oa_appid).original_id,
            "from_user": user_card.openid,
            "create_time": int(self.now()),
            "card_id": user_card.card_id,
        }
