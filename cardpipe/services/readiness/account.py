"""Official account, Mini Program and server-URL items.

The access_token and the card api_ticket are read through the credential store like any worker
reads them: WeChat is asked only when no valid one is held, and never with a forced refresh. The
Mini Program's secret is proven with a login code that cannot exist: WeChat checks appid and
secret before the code, so 40029 (bad code) means the secret is right and 40125 that it is not.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cardpipe import secretbox
from cardpipe.services.readiness import signals
from cardpipe.services.readiness.ports import PROBE_MEMORY_S, ReadinessPorts
from cardpipe.services.readiness.report import Item, Section, failing, ok, warning
from models import CredentialKind, Event, InboxItem, InboxSource, MiniProgram, OfficialAccount, Order
from wechat.errors import ConfigurationError, DailyQuotaError, MinuteQuotaError, RetryableError, WeChatError

OA = Section.OFFICIAL_ACCOUNT
MP = Section.MINI_PROGRAM
SERVER = Section.SERVER_URL
#: A login code no user can have (real ones are 32 hex characters).
PROBE_LOGIN_CODE = "cardpipe-readiness-probe"
#: WeChat heard from within this long counts as "recently".
RECENT_PUSH_S = 7 * 86_400
_IP = re.compile(r"invalid ip ([0-9A-Fa-f:.]+)")
#: The remembered answer is keyed by a keyed hash of the secret it proved: a secret changed in
#: cardpipe is probed afresh, and Redis never holds anything that helps guess the secret.
FINGERPRINT_PURPOSE = "readiness-secret-fingerprint"
BASIC_CONFIG = "mp.weixin.qq.com → 设置与开发 → 基本配置 (Basic configuration)"


def _ago(at: float, now: float) -> str:
    seconds = max(0, int(now - at))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago" if seconds < 172_800 else f"{seconds // 86_400} days ago"


def _token_failure(appid: str, exc: WeChatError) -> tuple[str, str]:
    """What a failed token fetch means and what to do, from WeChat's errcode."""
    if exc.errcode == 40164:
        match = _IP.search(exc.errmsg)
        address = match.group(1) if match else "this server's egress address"
        return (
            f"WeChat refused the token request from {address}: the IP whitelist is on and {address} is not in it",
            f"add {address} to the Official Account's IP whitelist: {BASIC_CONFIG} → IP白名单 "
            "(a cloud function needs a fixed egress IP)",
        )
    if exc.errcode == 40013:
        return (
            f"WeChat does not know appid {appid} (40013)",
            f"copy the AppID from {BASIC_CONFIG} → 开发者ID and register it again (cardpipe account add-oa)",
        )
    if exc.errcode in (40001, 40125):
        return (
            f"WeChat refused the AppSecret ({exc.errcode})",
            f"reset or copy the AppSecret in {BASIC_CONFIG} → 开发者密码(AppSecret) and store it again "
            "(cardpipe account add-oa, or PUT /v1/admin/official-accounts/{appid})",
        )
    if exc.errcode in (40243, 89501, 89503, 89506, 89507):
        return (
            f"WeChat refused the account ({exc.errcode}: {exc.errmsg})",
            "an administrator must confirm the IP or unfreeze the AppSecret in the WeChat back office",
        )
    if isinstance(exc, DailyQuotaError):
        return (
            f"the daily quota of the token endpoint is spent ({exc.errmsg})",
            "wait for Beijing midnight or reset the quota (clear_quota, 10 a month); find what fetched so often",
        )
    if isinstance(exc, RetryableError | MinuteQuotaError):
        return (f"WeChat could not be reached or was busy ({exc})", "check this server's network and run again")
    return (f"WeChat answered {exc.errcode}: {exc.errmsg}", "see WeChat's global return codes for this errcode")


def oa_credentials(ports: ReadinessPorts, appid: str) -> Item:
    checked = "access_token (appid, AppSecret, IP whitelist); fetched only if none valid is held, never forced"
    title = "OA credentials"
    try:
        ports.credentials.access_token(appid)
    except WeChatError as exc:
        detail, remedy = _token_failure(appid, exc)
        return failing("oa.credentials", OA, title, checked, detail, remedy)
    stored = ports.credentials.stored(appid, CredentialKind.ACCESS_TOKEN)
    left = f"; it expires in {int(stored.remaining(ports.clock()))}s" if stored else ""
    detail = f"a valid access_token is held (WeChat accepted appid, AppSecret and caller address){left}"
    return ok("oa.credentials", OA, title, checked, detail)


def oa_card_api(ports: ReadinessPorts, appid: str, credentials_ok: bool) -> Item:
    checked = "the wx_card api_ticket (card API permission); fetched only if none valid is held"
    title = "Card API permission"
    if not credentials_ok:
        return warning(
            "oa.card_api", OA, title, checked, "not checked: needs a working access_token", "fix the OA credentials"
        )
    try:
        ticket = ports.credentials.card_ticket(appid)
    except ConfigurationError as exc:
        return failing(
            "oa.card_api",
            OA,
            title,
            checked,
            f"WeChat refused the card API ({exc.errcode}: {exc.errmsg})",
            "add the card feature (卡券功能) to the Official Account: mp.weixin.qq.com → 新的功能 / 插件管理 "
            "→ 卡券功能 (needs a verified account); check the appid is the OA's, not the Mini Program's",
        )
    except WeChatError as exc:
        return failing("oa.card_api", OA, title, checked, f"the card ticket fetch failed: {exc}", "run again")
    return ok("oa.card_api", OA, title, checked, f"card api_ticket version {ticket.version} held")


def oa_quota(ports: ReadinessPorts, appid: str) -> Item:
    status = ports.credentials.guard.status(appid)
    checked = "cardpipe's record of WeChat's daily quota (45009)"
    if status.blocked:
        until = f"{status.blocked_until:%Y-%m-%d %H:%M}Z" if status.blocked_until else "Beijing midnight"
        return failing(
            "oa.quota",
            OA,
            "Daily quota",
            checked,
            f"outbound calls are blocked until {until}: {status.reason}",
            f"reset the quota with clear_quota (10 a month), then: cardpipe credentials unblock {appid}",
        )
    return ok("oa.quota", OA, "Daily quota", checked, "not blocked")


def mp_secret(ports: ReadinessPorts, program: MiniProgram) -> Item:
    checked = "jscode2session with a login code no user has: 40029 = secret right, 40125 = secret wrong"
    title = f"MP {program.appid} secret"
    key = secretbox.derived_keys(FINGERPRINT_PURPOSE)[0]
    fingerprint = hmac.new(key, program.app_secret.encode(), hashlib.sha256).hexdigest()[:16]
    memory = signals.probe_key("mp-secret", program.appid, fingerprint)
    if signals.remembered(ports.redis, memory):
        return ok("mp.secret", MP, title, checked, "WeChat accepted appid and AppSecret (answer remembered)")
    try:
        ports.mini_programs.jscode2session(program.appid, program.app_secret, PROBE_LOGIN_CODE)
    except ConfigurationError as exc:
        what = "appid" if exc.errcode == 40013 else "AppSecret"
        return failing(
            "mp.secret",
            MP,
            title,
            checked,
            f"WeChat refused the Mini Program's {what} ({exc.errcode})",
            "copy AppID and AppSecret from mp.weixin.qq.com (the Mini Program) → 开发 → 开发管理 → 开发设置, "
            "then store them again (cardpipe account add-mp)",
        )
    except (RetryableError, MinuteQuotaError) as exc:
        return warning("mp.secret", MP, title, checked, f"not checked: {exc}", "run again")
    except WeChatError as exc:
        if exc.errcode not in (40029, 40163):
            return warning("mp.secret", MP, title, checked, f"unexpected answer {exc.errcode}", "run again")
    signals.remember(ports.redis, memory, PROBE_MEMORY_S)
    return ok("mp.secret", MP, title, checked, "WeChat checked appid and AppSecret and only refused the fake code")


def mp_open_platform(session: Session, ports: ReadinessPorts, program: MiniProgram, event_id: int | None) -> Item:
    checked = "whether orders carry unionids; whether the last login through the Mini Program came with one"
    title = f"MP {program.appid} on the OA's Open Platform"
    query = select(Order.id).join(Event, Event.id == Order.event_id)
    query = query.where(Event.mini_program_id == program.id, Order.unionid.is_not(None))
    if event_id is not None:
        query = query.where(Event.id == event_id)
    if session.scalar(query.limit(1)) is None:
        return ok("mp.open_platform", MP, title, checked, "no order carries a unionid: the binding is not relied on")
    remedy = (
        "bind the Mini Program and the Official Account to the same Open Platform account: "
        "open.weixin.qq.com → 管理中心 → 绑定公众号/小程序"
    )
    login = signals.last_login(ports.redis, program.appid)
    if login is None:
        return warning(
            "mp.open_platform",
            MP,
            title,
            checked,
            "orders carry unionids, but no login through the Mini Program was seen yet to prove the binding",
            "log in once with a tester in the Mini Program (the rehearsal), then run the doctor again",
        )
    if not login["unionid"]:
        return failing(
            "mp.open_platform",
            MP,
            title,
            checked,
            f"the last login ({_ago(login['at'], ports.clock())}) came without a unionid: "
            "the Mini Program is not bound to an Open Platform account",
            remedy,
        )
    return ok(
        "mp.open_platform", MP, title, checked, f"the last login ({_ago(login['at'], ports.clock())}) had a unionid"
    )


def _heard(session: Session, ports: ReadinessPorts, account: OfficialAccount) -> tuple[float | None, float | None]:
    """When the last push from WeChat was stored, and when WeChat last checked the server URL."""
    last_push = session.scalar(
        select(func.max(InboxItem.received_at)).where(
            InboxItem.official_account_id == account.id, InboxItem.source == InboxSource.WECHAT
        )
    )
    url_check = signals.last_url_check(ports.redis, account.appid)
    return (last_push.timestamp() if last_push else None, float(url_check["at"]) if url_check else None)


def server_pushes(session: Session, ports: ReadinessPorts, account: OfficialAccount) -> Item:
    checked = "the last push stored from WeChat and the last server-URL check"
    title = "Pushes reach cardpipe"
    last_push, url_check = _heard(session, ports, account)
    path = f"/wechat/{account.appid}/events"
    remedy = (
        f"set 服务器地址(URL) to https://<this service>{path} and 令牌(Token) to the stored server token in "
        f"{BASIC_CONFIG} → 服务器配置, then enable it (WeChat checks the URL at once)"
    )
    now = ports.clock()
    heard = [at for at in (last_push, url_check) if at is not None]
    if not heard:
        return failing("server.pushes", SERVER, title, checked, "nothing received from WeChat yet", remedy)
    last = max(heard)
    if now - last > RECENT_PUSH_S:
        return warning("server.pushes", SERVER, title, checked, f"last heard from WeChat {_ago(last, now)}", remedy)
    kind = "a push" if last == last_push else "a URL check"
    return ok("server.pushes", SERVER, title, checked, f"{kind} from WeChat arrived {_ago(last, now)}")


def server_safe_mode(session: Session, ports: ReadinessPorts, account: OfficialAccount) -> Item:
    checked = "pushes refused since the last push or URL check accepted; whether an EncodingAESKey is stored"
    title = "Push signature and safe mode"
    refused = signals.last_refused_push(ports.redis, account.appid)
    accepted = max((at for at in _heard(session, ports, account) if at is not None), default=0.0)
    if refused and refused["at"] > accepted:
        reason = refused["reason"]
        when = datetime.fromtimestamp(refused["at"], UTC)
        detail = f"a push was refused at {when:%Y-%m-%d %H:%M:%S}Z: {reason}"
        if "EncodingAESKey" in reason:
            # Its signature checked out: WeChat sent it, encrypted, and cardpipe cannot read it.
            remedy = (
                f"WeChat is in safe mode: copy 消息加解密密钥(EncodingAESKey) from {BASIC_CONFIG} → 服务器配置 "
                "and store it with the account (cardpipe account add-oa; the api picks it up within 30 s)"
            )
            return failing("server.safe_mode", SERVER, title, checked, detail, remedy)
        # A bad signature may come from anyone; from WeChat it means the Token differs.
        remedy = f"if WeChat sent it: the 令牌(Token) in {BASIC_CONFIG} → 服务器配置 must equal the stored server token"
        return warning("server.safe_mode", SERVER, title, checked, detail, remedy)
    if account.encoding_aes_key:
        return ok("server.safe_mode", SERVER, title, checked, "EncodingAESKey stored: safe-mode pushes are decrypted")
    return ok(
        "server.safe_mode",
        SERVER,
        title,
        checked,
        "plain mode: no EncodingAESKey stored (store one before switching to safe mode)",
    )
