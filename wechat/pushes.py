"""Card event pushes: XML ⇄ typed events (protocol page §7.5).

Parsed with lxml (libxml2: a third of defusedxml's CPU on a push, and every push is parsed twice
in safe mode) with entity substitution, DTD loading and network access off, and any document
type declaration refused: WeChat's messages have none. CDATA and text are trimmed, because
WeChat's own samples put spaces around CDATA sections.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypedDict

from lxml import etree


class EventParseError(ValueError):
    """The body is not a card event WeChat would send."""


class EventHeader(TypedDict):
    """The fields every card event starts with (keyword arguments of any :class:`CardEvent`)."""

    to_user: str
    from_user: str
    create_time: int
    card_id: str


@dataclass(frozen=True, slots=True)
class CardEvent:
    """Fields common to every card event. ``from_user`` is the holder's *OA* openid."""

    event: ClassVar[str] = ""
    to_user: str
    from_user: str
    create_time: int
    card_id: str

    @property
    def user_card_code(self) -> str:
        return ""

    @property
    def dedupe_key(self) -> str:
        """FromUserName + CreateTime + Event + CardId + UserCardCode: WeChat's recommended key plus
        the card and the code, so the pushes of one batch addCard (same user, same second) and
        the audit verdicts of two cards in the same second (no code, system sender) stay
        distinct."""
        return f"{self.from_user}:{self.create_time}:{self.event}:{self.card_id}:{self.user_card_code}"


@dataclass(frozen=True, slots=True)
class UserGetCard(CardEvent):
    event: ClassVar[str] = "user_get_card"
    code: str = ""
    outer_str: str = ""
    union_id: str = ""
    is_give_by_friend: bool = False
    friend_user_name: str = ""
    old_user_card_code: str = ""

    @property
    def user_card_code(self) -> str:
        return self.code


@dataclass(frozen=True, slots=True)
class UserDelCard(CardEvent):
    event: ClassVar[str] = "user_del_card"
    code: str = ""

    @property
    def user_card_code(self) -> str:
        return self.code


@dataclass(frozen=True, slots=True)
class UserConsumeCard(CardEvent):
    event: ClassVar[str] = "user_consume_card"
    code: str = ""
    consume_source: str = ""
    location_name: str = ""
    staff_open_id: str = ""
    outer_str: str = ""

    @property
    def user_card_code(self) -> str:
        return self.code


@dataclass(frozen=True, slots=True)
class UserGiftingCard(CardEvent):
    event: ClassVar[str] = "user_gifting_card"
    code: str = ""
    is_return_back: bool = False
    friend_user_name: str = ""

    @property
    def user_card_code(self) -> str:
        return self.code


@dataclass(frozen=True, slots=True)
class CardPassCheck(CardEvent):
    event: ClassVar[str] = "card_pass_check"


@dataclass(frozen=True, slots=True)
class CardNotPassCheck(CardEvent):
    event: ClassVar[str] = "card_not_pass_check"
    refuse_reason: str = ""


@dataclass(frozen=True, slots=True)
class OtherEvent(CardEvent):
    """An event cardpipe stores but does not act on (user_view_card, card_sku_remind…)."""

    name: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def dedupe_key(self) -> str:
        code = self.extra.get("UserCardCode", "")
        return f"{self.from_user}:{self.create_time}:{self.name}:{self.card_id}:{code}"


#: XML element name for each dataclass field that is not common to all events.
_XML_NAMES = {
    "code": "UserCardCode",
    "outer_str": "OuterStr",
    "union_id": "UnionId",
    "is_give_by_friend": "IsGiveByFriend",
    "friend_user_name": "FriendUserName",
    "old_user_card_code": "OldUserCardCode",
    "consume_source": "ConsumeSource",
    "location_name": "LocationName",
    "staff_open_id": "StaffOpenId",
    "is_return_back": "IsReturnBack",
    "refuse_reason": "RefuseReason",
}
_EVENT_TYPES: dict[str, type[CardEvent]] = {
    cls.event: cls
    for cls in (UserGetCard, UserDelCard, UserConsumeCard, UserGiftingCard, CardPassCheck, CardNotPassCheck)
}
_COMMON = ("to_user", "from_user", "create_time", "card_id")


_parsers = threading.local()


def _parser() -> Any:
    """This thread's parser (an lxml parser is not to be shared between threads)."""
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = etree.XMLParser(
            resolve_entities=False,
            load_dtd=False,
            no_network=True,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
        )
    return parser


def parse_xml(body: bytes | str) -> dict[str, str]:
    """Parse a flat WeChat XML message into {tag: trimmed text}."""
    try:
        root = etree.fromstring(body.encode("utf-8") if isinstance(body, str) else body, _parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise EventParseError(f"malformed XML: {exc}") from exc
    if root.getroottree().docinfo.doctype:
        raise EventParseError("refused XML: a document type declaration")
    if root.tag != "xml":
        raise EventParseError("root element is not <xml>")
    return {str(child.tag): (child.text or "").strip() for child in root}


def event_from_fields(values: dict[str, str]) -> CardEvent:
    if values.get("MsgType") != "event":
        raise EventParseError("not an event message")
    try:
        common: EventHeader = {
            "to_user": values["ToUserName"],
            "from_user": values["FromUserName"],
            "create_time": int(values["CreateTime"]),
            "card_id": values.get("CardId", ""),
        }
    except (KeyError, ValueError) as exc:
        raise EventParseError(f"missing or bad common field: {exc}") from exc
    name = values.get("Event", "")
    cls = _EVENT_TYPES.get(name)
    if cls is None:
        return OtherEvent(**common, name=name, extra=values)
    specific: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in _COMMON or f.name not in _XML_NAMES:
            continue
        raw = values.get(_XML_NAMES[f.name], "")
        specific[f.name] = raw == "1" if f.type in ("bool", bool) else raw
    return cls(**common, **specific)


def parse_event(body: bytes | str) -> CardEvent:
    return event_from_fields(parse_xml(body))


def _cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def render_event(event: CardEvent) -> str:
    """The XML WeChat would push for ``event`` (used by the fake and by tests)."""
    parts = [
        f"<ToUserName>{_cdata(event.to_user)}</ToUserName>",
        f"<FromUserName>{_cdata(event.from_user)}</FromUserName>",
        f"<CreateTime>{event.create_time}</CreateTime>",
        f"<MsgType>{_cdata('event')}</MsgType>",
        f"<Event>{_cdata(event.event)}</Event>",
        f"<CardId>{_cdata(event.card_id)}</CardId>",
    ]
    for f in fields(event):
        if f.name in _COMMON or f.name not in _XML_NAMES:
            continue
        value = getattr(event, f.name)
        text = ("1" if value else "0") if isinstance(value, bool) else str(value)
        parts.append(f"<{_XML_NAMES[f.name]}>{_cdata(text)}</{_XML_NAMES[f.name]}>")
    return "<xml>" + "".join(parts) + "</xml>"


def render_encrypted_envelope(to_user: str, encrypted: str) -> str:
    """The body of a safe-mode push: the original ToUserName and the Encrypt element."""
    return f"<xml><ToUserName>{_cdata(to_user)}</ToUserName><Encrypt>{_cdata(encrypted)}</Encrypt></xml>"
