"""Events: one official account's ticket card, the mini program that hands its tickets out, a code
policy and a launch time.

An event is either bound to an existing card (checked with ``card/get``: a MEETING_TICKET or
SCENIC_TICKET in custom-code or deposit mode, not bound to openids) or gets a new card from a
:class:`CardSpec` through ``card/create``. Every check that needs no WeChat call runs first, so a
refused event never leaves a card behind at WeChat.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from cardpipe.services.accounts import UnknownAccount, mini_program_by_appid, official_account_by_appid
from cardpipe.services.checkin.lists import default_list
from cardpipe.services.codes import CodePolicyError, check_policy
from models import CodeMode, Event, OfficialAccount
from models.event import UNAMBIGUOUS_ALPHABET
from wechat.client import CardApi
from wechat.errors import BusinessError

#: Characters a person misreads at a gate: 0/O/o, 1/I/l/L.
AMBIGUOUS_CHARACTERS = frozenset("0Oo1IlL")
TICKET_CARD_TYPES = ("MEETING_TICKET", "SCENIC_TICKET")
DEPOSIT_MODE = "GET_CUSTOM_CODE_MODE_DEPOSIT"
#: card_ids are URL-safe base64-ish (``p1Pj9jr90_SQRaVqYI239Ka1erkI``); pre-issue relies on it
#: to write cardExt rows without escaping.
CARD_ID = re.compile(r"^[0-9A-Za-z_-]{1,32}$")
#: ``base_info`` keys cardpipe decides: tickets use custom codes and are never openid-bound.
_MANAGED_BASE_INFO = ("use_custom_code", "get_custom_code_mode", "bind_openid")


class EventError(ValueError):
    """The event cannot be created as asked; the message says why (safe to show the admin)."""


class UnknownEvent(LookupError):
    pass


@dataclass(frozen=True)
class CodePolicy:
    length: int = 12
    alphabet: str = UNAMBIGUOUS_ALPHABET
    allow_ambiguous: bool = False

    def check(self) -> None:
        """Raises :class:`EventError` unless codes of this policy are ≤ 20 alphanumerics, plentiful
        enough, and (unless allowed) free of characters a person misreads."""
        try:
            check_policy(self.length, self.alphabet)
        except CodePolicyError as exc:
            raise EventError(str(exc)) from None
        ambiguous = sorted(AMBIGUOUS_CHARACTERS.intersection(self.alphabet))
        if ambiguous and not self.allow_ambiguous:
            raise EventError(f"code alphabet has ambiguous characters {''.join(ambiguous)} (set allow_ambiguous)")


class CardSpec(BaseModel):
    """What the organiser says about a new ticket card; cardpipe adds the code settings.

    ``base_info`` is WeChat's (protocol page §3.2: logo_url, brand_name, title, color, notice,
    description, date_info, …). ``can_give_friend`` and ``can_share`` default to false: a gifted
    ticket would come back under a new code. ``sku.quantity`` defaults to 1 (custom codes) and is
    0 in deposit mode; pre-issue raises the stock to what the orders need.
    """

    model_config = ConfigDict(extra="forbid")

    card_type: Literal["MEETING_TICKET", "SCENIC_TICKET"] = "MEETING_TICKET"
    base_info: dict[str, Any]
    meeting_detail: str | None = Field(default=None, description="MEETING_TICKET: required")
    map_url: str | None = None
    ticket_class: str | None = Field(default=None, description="SCENIC_TICKET")
    guide_url: str | None = Field(default=None, description="SCENIC_TICKET")


def card_create_body(spec: CardSpec, code_mode: CodeMode) -> dict[str, Any]:
    """The ``card/create`` body for ``spec`` in ``code_mode``."""
    base_info = copy.deepcopy(spec.base_info)
    if base_info.get("bind_openid"):
        raise EventError("openid-bound cards are not supported: the mini program does not know OA openids")
    for key in _MANAGED_BASE_INFO:
        base_info.pop(key, None)
    if spec.card_type == "MEETING_TICKET" and not spec.meeting_detail:
        raise EventError("a MEETING_TICKET card needs meeting_detail")
    base_info["use_custom_code"] = True
    base_info.setdefault("code_type", "CODE_TYPE_QRCODE")
    base_info.setdefault("can_give_friend", False)
    base_info.setdefault("can_share", False)
    given_sku = base_info.get("sku")
    sku: dict[str, Any] = given_sku if isinstance(given_sku, dict) else {}
    if code_mode == CodeMode.DEPOSIT:
        base_info["get_custom_code_mode"] = DEPOSIT_MODE
        base_info["sku"] = {**sku, "quantity": 0}
    else:
        base_info["sku"] = {"quantity": 1, **sku}
    inner: dict[str, Any] = {"base_info": base_info}
    details = ("meeting_detail", "map_url") if spec.card_type == "MEETING_TICKET" else ("ticket_class", "guide_url")
    for name in details:
        value = getattr(spec, name)
        if value is not None:
            inner[name] = value
    return {"card": {"card_type": spec.card_type, spec.card_type.lower(): inner}}


@dataclass(frozen=True)
class EventInput:
    name: str
    oa_appid: str
    mp_appid: str
    #: Exactly one of ``card_id`` (an existing card) and ``card_spec`` (create one).
    card_id: str | None = None
    card_spec: CardSpec | None = None
    #: Only for a new card; an existing card's mode is read from WeChat.
    code_mode: CodeMode = CodeMode.CUSTOM
    code_policy: CodePolicy = CodePolicy()
    launch_at: datetime | None = None
    notes: str | None = None


@dataclass(frozen=True)
class ExistingCard:
    card_type: str
    code_mode: CodeMode
    status: str


def inspect_card(api: CardApi, card_id: str) -> ExistingCard:
    """What ``card/get`` says about a card an event is to be bound to, refusing unusable cards."""
    try:
        card = api.card_get(card_id)
    except BusinessError as exc:
        raise EventError(f"card {card_id} is not usable by this official account (errcode {exc.errcode})") from None
    card_type = str(card.get("card_type", ""))
    if card_type not in TICKET_CARD_TYPES:
        raise EventError(f"card {card_id} is a {card_type or 'card of unknown type'}, not a ticket card")
    base_info = (card.get(card_type.lower()) or {}).get("base_info") or {}
    if not base_info.get("use_custom_code"):
        raise EventError(f"card {card_id} lets WeChat pick the codes; an event needs custom codes")
    if base_info.get("bind_openid"):
        raise EventError(f"card {card_id} is bound to openids, which the mini program does not know")
    mode = CodeMode.DEPOSIT if base_info.get("get_custom_code_mode") == DEPOSIT_MODE else CodeMode.CUSTOM
    return ExistingCard(card_type, mode, str(base_info.get("status", "CARD_STATUS_NOT_VERIFY")))


def create_event(session: Session, data: EventInput, *, card_api: CardApi) -> Event:
    """Check everything local, then bind or create the card at WeChat, then store the event.

    Raises :class:`EventError` for anything the admin must change; WeChat's quota, transport and
    configuration errors propagate as they are.
    """
    if (data.card_id is None) == (data.card_spec is None):
        raise EventError("give either card_id (an existing card) or card (a spec to create one), not both")
    data.code_policy.check()
    try:
        account = official_account_by_appid(session, data.oa_appid)
        program = mini_program_by_appid(session, data.mp_appid)
    except UnknownAccount as exc:
        raise EventError(str(exc)) from None
    if program.official_account_id != account.id:
        raise EventError(f"mini program {data.mp_appid} is not bound to official account {data.oa_appid}")

    if data.card_id is not None:
        if not CARD_ID.match(data.card_id):
            raise EventError("card_id must be 1–32 letters, digits, '-' or '_'")
        if session.scalar(select(Event.id).where(Event.card_id == data.card_id)) is not None:
            raise EventError(f"card {data.card_id} already belongs to another event")
        existing = inspect_card(card_api, data.card_id)
        card_id, card_type, code_mode, status = data.card_id, existing.card_type, existing.code_mode, existing.status
    else:
        assert data.card_spec is not None
        body = card_create_body(data.card_spec, data.code_mode)
        try:
            card_id = card_api.card_create(body)
        except BusinessError as exc:
            raise EventError(f"WeChat refused the card (errcode {exc.errcode}: {exc.errmsg})") from None
        if not CARD_ID.match(card_id):
            raise EventError("WeChat answered a card_id cardpipe cannot use")
        card_type, code_mode, status = data.card_spec.card_type, data.code_mode, "CARD_STATUS_NOT_VERIFY"

    event = Event(
        name=data.name,
        official_account_id=account.id,
        mini_program_id=program.id,
        card_id=card_id,
        card_type=card_type,
        card_status=status,
        code_mode=code_mode,
        code_length=data.code_policy.length,
        code_alphabet=data.code_policy.alphabet,
        launch_at=data.launch_at.astimezone(UTC) if data.launch_at else None,
        notes=data.notes,
    )
    session.add(event)
    session.flush()
    default_list(session, event.id)
    return event


def get_event(session: Session, event_id: int) -> Event:
    event = session.get(Event, event_id)
    if event is None:
        raise UnknownEvent(f"no event {event_id}")
    return event


def event_oa_appid(session: Session, event: Event) -> str:
    account = session.get(OfficialAccount, event.official_account_id)
    assert account is not None
    return account.appid
