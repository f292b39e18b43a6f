"""The event's card, from one ``card/get``: exists and is a custom-code ticket card, audit state,
stock against the tickets still to claim, ``get_limit`` against the most tickets one buyer holds,
gifting and sharing off, validity dates around the launch, Mini Program jump fields; and the
account's custom-code permission, probed with a ``code/get`` of a code that cannot exist.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cardpipe.services.readiness import signals
from cardpipe.services.readiness.ports import PROBE_MEMORY_S, ReadinessPorts
from cardpipe.services.readiness.report import Item, Section, Status, failing, ok, warning
from models import RECEIVED_STATES, Event, Order, Ticket
from wechat.client import CardApi
from wechat.errors import BusinessError, ConfigurationError, WeChatError

CARD = Section.CARD
TICKET_CARD_TYPES = ("MEETING_TICKET", "SCENIC_TICKET")
#: WeChat's default per-user receive limit (protocol page §3.2).
DEFAULT_GET_LIMIT = 50
#: A code that no card can hold (custom codes are letters and digits).
PROBE_CODE = "0"
MP_JUMP_FIELDS = ("center_app_brand_user_name", "custom_app_brand_user_name", "promotion_app_brand_user_name")
CARD_FEATURE = "add the card feature (卡券功能): mp.weixin.qq.com → 新的功能 / 插件管理 → 卡券功能"
CARD_EDIT = "mp.weixin.qq.com → 卡券功能 → 卡券管理 → the card → 修改 (or POST /card/update)"


def check_card(session: Session, ports: ReadinessPorts, event: Event, appid: str, api_ok: bool) -> list[Item]:
    checked = f"card/get {event.card_id}"
    if not api_ok or event.card_id is None:
        why = "the event has no card" if event.card_id is None else "needs the card API"
        return [warning("card.exists", CARD, "Card", checked, f"not checked: {why}", "fix the items above")]
    api = ports.credentials.card_api(appid)
    try:
        card = api.card_get(event.card_id)
    except (BusinessError, ConfigurationError) as exc:
        detail = f"WeChat answered {exc.errcode} ({exc.errmsg}) for card {event.card_id}"
        if exc.errcode == 48001:
            remedy = f"the Official Account lost the card API: {CARD_FEATURE}"
        else:
            remedy = "bind the event to a card of this Official Account (40073: no such card; 45030: another account's)"
        return [failing("card.exists", CARD, "Card", checked, detail, remedy)]
    except WeChatError as exc:
        return [warning("card.exists", CARD, "Card", checked, f"not checked: {exc}", "run again")]
    card_type = str(card.get("card_type", ""))
    base_info: dict[str, Any] = ((card.get(card_type.lower()) or {}).get("base_info")) or {}
    items = [_kind(checked, card_type, base_info)]
    if items[0].status != Status.OK:
        return items
    return [
        *items,
        _audit(checked, base_info),
        _stock(session, event, checked, base_info),
        _get_limit(session, event, checked, base_info),
        _custom_code(ports, api, event.card_id),
        _sharing(checked, base_info),
        _dates(event, checked, base_info, ports.clock()),
        _mp_jump(checked, base_info),
    ]


def _kind(checked: str, card_type: str, base_info: dict[str, Any]) -> Item:
    title = "Card exists and is a ticket card"
    if card_type not in TICKET_CARD_TYPES:
        detail = f"the card is a {card_type or 'card of unknown type'}, not MEETING_TICKET / SCENIC_TICKET"
        return failing("card.exists", CARD, title, checked, detail, "create the event with a ticket card")
    if not base_info.get("use_custom_code") or base_info.get("bind_openid"):
        detail = "the card lets WeChat pick codes or is bound to openids"
        return failing("card.exists", CARD, title, checked, detail, "create the event with a card cardpipe creates")
    return ok("card.exists", CARD, title, checked, f"{card_type} with custom codes")


def _audit(checked: str, base_info: dict[str, Any]) -> Item:
    status = str(base_info.get("status", ""))
    title = "Audit"
    if status in ("CARD_STATUS_VERIFY_OK", "CARD_STATUS_DISPATCH"):
        return ok("card.audit", CARD, title, checked, f"{status}: every user can receive it")
    if status == "CARD_STATUS_NOT_VERIFY":
        return failing(
            "card.audit",
            CARD,
            title,
            checked,
            "still in WeChat's audit: only testers on the card test whitelist can receive it",
            "wait for card_pass_check (usually within a day); for a rehearsal add the testers with "
            "/card/testwhitelist/set (卡券功能 → 测试白名单)",
        )
    reason = "refused by the audit" if status == "CARD_STATUS_VERIFY_FAIL" else f"in state {status or 'unknown'}"
    return failing(
        "card.audit",
        CARD,
        title,
        checked,
        f"the card was {reason}",
        f"fix what the audit refused and resubmit: {CARD_EDIT}",
    )


def _to_claim(session: Session, event: Event) -> int:
    """Tickets ordered (the import keeps the event's total exact) minus those already received."""
    received = session.scalar(
        select(func.count()).where(Ticket.event_id == event.id, Ticket.state.in_(RECEIVED_STATES))
    )
    return event.tickets_total - int(received or 0)


def _stock(session: Session, event: Event, checked: str, base_info: dict[str, Any]) -> Item:
    stock = int((base_info.get("sku") or {}).get("quantity", 0))
    wanted = _to_claim(session, event)
    title = "Stock"
    detail = f"stock {stock} for {wanted} tickets still to claim"
    if stock < wanted:
        return failing(
            "card.stock",
            CARD,
            title,
            checked,
            detail,
            f"run pre-issue (cardpipe preissue {event.id}): it raises the stock by the shortfall",
        )
    return ok("card.stock", CARD, title, checked, detail)


def _get_limit(session: Session, event: Event, checked: str, base_info: dict[str, Any]) -> Item:
    per_buyer = (
        select(func.sum(Order.ticket_count).label("tickets"))
        .where(Order.event_id == event.id)
        .group_by(Order.mp_openid)
    ).subquery()
    most = int(session.scalar(select(func.coalesce(func.max(per_buyer.c.tickets), 0))) or 0)
    limit = int(base_info.get("get_limit", DEFAULT_GET_LIMIT))
    title = "Receive limit (get_limit)"
    detail = f"get_limit {limit}; the most tickets one buyer holds: {most}"
    if limit < most:
        return failing(
            "card.get_limit",
            CARD,
            title,
            checked,
            detail + " (a ticket beyond the limit fails in wx.addCard with 45033)",
            f"raise get_limit to at least {most}: {CARD_EDIT} → 领券限制",
        )
    return ok("card.get_limit", CARD, title, checked, detail)


def _custom_code(ports: ReadinessPorts, api: CardApi, card_id: str) -> Item:
    checked = "code/get of a code that cannot exist: 40056 = allowed, 43009 = no custom-code permission"
    title = "Custom-code permission"
    memory = signals.probe_key("custom-code", card_id)
    if signals.remembered(ports.redis, memory):
        return ok("card.custom_code", CARD, title, checked, "WeChat looks custom codes up (answer remembered)")
    try:
        api.code_get(card_id, PROBE_CODE, check_consume=False)
    except WeChatError as exc:
        if exc.errcode == 43009:
            return failing(
                "card.custom_code",
                CARD,
                title,
                checked,
                "WeChat refused custom codes for this account (43009)",
                "apply for the custom-code (自定义code) permission of the card feature in the WeChat back office",
            )
        if exc.errcode != 40056:
            return warning("card.custom_code", CARD, title, checked, f"unexpected answer: {exc}", "run again")
    signals.remember(ports.redis, memory, PROBE_MEMORY_S)
    return ok("card.custom_code", CARD, title, checked, "WeChat looked the code up and did not find it: allowed")


def _sharing(checked: str, base_info: dict[str, Any]) -> Item:
    gift, share = base_info.get("can_give_friend", True), base_info.get("can_share", True)
    title = "Gifting and sharing off"
    detail = f"can_give_friend {str(gift).lower()}, can_share {str(share).lower()}"
    if gift:
        return failing(
            "card.sharing",
            CARD,
            title,
            checked,
            detail + ": a gifted ticket comes back under a new code the gate does not know",
            f"switch off 转赠 (can_give_friend false): {CARD_EDIT}",
        )
    if share:
        return warning(
            "card.sharing",
            CARD,
            title,
            checked,
            detail + ": the card page can be shared",
            f"switch off 分享 (can_share false): {CARD_EDIT}",
        )
    return ok("card.sharing", CARD, title, checked, detail)


def _dates(event: Event, checked: str, base_info: dict[str, Any], now: float) -> Item:
    info = base_info.get("date_info") or {}
    title = "Validity covers the event"
    if info.get("type") not in ("DATE_TYPE_FIX_TIME_RANGE", 1):
        return ok("card.dates", CARD, title, checked, f"{info.get('type')}: valid for a term after receipt")
    begin, end = int(info.get("begin_timestamp", 0)), int(info.get("end_timestamp", 0))
    launch = event.launch_at.timestamp() if event.launch_at else now
    span = f"valid {_day(begin)} – {_day(end)}"
    what = f"launch at {_day(launch)}" if event.launch_at else "no launch time set; checked against now"
    if not begin <= launch < end or end <= now:
        return failing(
            "card.dates",
            CARD,
            title,
            checked,
            f"{span}, {what}",
            f"set the validity (有效期) to cover the launch and the event's days: {CARD_EDIT}",
        )
    return ok("card.dates", CARD, title, checked, f"{span}, {what}")


def _day(timestamp: float) -> str:
    return f"{datetime.fromtimestamp(timestamp, UTC):%Y-%m-%d %H:%M}Z"


def _mp_jump(checked: str, base_info: dict[str, Any]) -> Item:
    title = "Mini Program jump fields"
    given = {name: str(base_info[name]) for name in MP_JUMP_FIELDS if base_info.get(name)}
    if not given:
        return ok("card.mp_jump", CARD, title, checked, "no jump to a Mini Program on the card")
    wrong = [
        f"{name}={value}" for name, value in given.items() if not value.startswith("gh_") or not value.endswith("@app")
    ]
    if wrong:
        return failing(
            "card.mp_jump",
            CARD,
            title,
            checked,
            f"not a Mini Program user name: {', '.join(wrong)}",
            "use the bound Mini Program's original id plus @app (gh_…@app); only Mini Programs bound to the "
            f"Official Account can be jumped to: {CARD_EDIT}",
        )
    return ok("card.mp_jump", CARD, title, checked, ", ".join(f"{k}={v}" for k, v in given.items()))
