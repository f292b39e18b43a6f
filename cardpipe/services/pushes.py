"""Inbound WeChat pushes to an official account's server URL (protocol page §7): signature and
safe-mode checks, then the typed event and the dedupe key it is stored under.

Nothing is stored before every check has passed: the signature; the timestamp's freshness and
the (timestamp, nonce) replay guard (``push_guard``, checked as the push is written:
``push_writes``); for an account in safe mode, an ``Encrypt`` with a valid ``msg_signature`` (a
plain body there is refused: its signature covers only token, timestamp and nonce, so a captured
query string would carry any body).

An account's token and EncodingAESKey are cached in-process for a short while: a push must be
answered fast, and re-reading (and decrypting) them from the database on every push is most of
the work otherwise.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import Engine, select

from cardpipe.db import session_scope
from cardpipe.services import push_guard, push_writes
from models import OfficialAccount
from wechat.crypto import MessageCrypto
from wechat.errors import SignatureError
from wechat.pushes import CardEvent, EventParseError, OtherEvent, event_from_fields, parse_xml
from wechat.signing import server_signature, signatures_match

ACCOUNT_CACHE_TTL_S = 30.0
MAX_DEDUPE_KEY_LENGTH = 255
SAFE_MODE = "aes"


class UnknownAccount(LookupError):
    pass


class NotAnEvent(Exception):
    """A signed, well-formed message that is not an event (a user's text to the OA, …)."""


@dataclass(frozen=True, slots=True)
class PushAccount:
    id: int
    appid: str
    server_token: str = field(repr=False)
    encoding_aes_key: str | None = field(repr=False)
    safe_mode: bool = False


@dataclass(frozen=True, slots=True)
class PushQuery:
    signature: str
    timestamp: str
    nonce: str
    encrypt_type: str | None = None
    msg_signature: str | None = None


_accounts: dict[str, tuple[float, PushAccount]] = {}
_accounts_lock = threading.Lock()


def push_account(appid: str) -> PushAccount:
    with _accounts_lock:
        cached = _accounts.get(appid)
    if cached and cached[0] > time.monotonic():
        return cached[1]
    with session_scope() as session:
        row = session.scalars(select(OfficialAccount).where(OfficialAccount.appid == appid)).one_or_none()
        if row is None:
            raise UnknownAccount(f"no official account {appid!r}")
        account = PushAccount(row.id, row.appid, row.server_token, row.encoding_aes_key, row.safe_mode)
    with _accounts_lock:
        _accounts[appid] = (time.monotonic() + ACCOUNT_CACHE_TTL_S, account)
    return account


def verify_signature(account: PushAccount, signature: str, timestamp: str, nonce: str) -> None:
    """``signature`` = sha1 of sorted [token, timestamp, nonce]: URL checks and every push."""
    if not signatures_match(server_signature(account.server_token, timestamp, nonce), signature):
        raise SignatureError("signature does not match the server token")


def open_push(
    account: PushAccount, query: PushQuery, body: bytes, *, now: float, max_age_s: float
) -> tuple[CardEvent, str]:
    """The event of a push and its plain XML. Raises SignatureError (bad signature, stale
    timestamp, plain push to a safe-mode account, bad msg_signature, payload for another appid),
    EventParseError (malformed) or NotAnEvent."""
    verify_signature(account, query.signature, query.timestamp, query.nonce)
    push_guard.check_fresh(query.timestamp, now=now, max_age_s=max_age_s)
    if account.safe_mode and query.encrypt_type != SAFE_MODE:
        raise SignatureError("this account is in safe mode: only encrypted pushes with msg_signature are accepted")
    if query.encrypt_type == SAFE_MODE:
        if not account.encoding_aes_key:
            raise SignatureError("safe-mode push, but the account has no EncodingAESKey")
        encrypted = parse_xml(body).get("Encrypt")
        if not encrypted:
            raise EventParseError("safe-mode push without an Encrypt element")
        crypto = MessageCrypto(account.server_token, account.encoding_aes_key, account.appid)
        xml = crypto.verify_and_decrypt(query.msg_signature or "", query.timestamp, query.nonce, encrypted)
    elif query.encrypt_type in (None, "", "raw"):
        try:
            xml = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventParseError("body is not UTF-8") from exc
    else:
        raise EventParseError(f"unknown encrypt_type {query.encrypt_type!r}")
    fields = parse_xml(xml)
    if fields.get("MsgType") != "event":
        raise NotAnEvent(fields.get("MsgType", ""))
    return event_from_fields(fields), xml


def dedupe_key(account: PushAccount, event: CardEvent) -> str:
    """The account plus FromUserName + CreateTime + Event + UserCardCode (``CardEvent.dedupe_key``:
    the pushes of one batch addCard share user and second, not code)."""
    key = f"wechat:{account.appid}:{event.dedupe_key}"
    if len(key) > MAX_DEDUPE_KEY_LENGTH:
        key = f"wechat:{account.appid}:sha256:{hashlib.sha256(key.encode('utf-8')).hexdigest()}"
    return key


def event_name(event: CardEvent) -> str:
    return event.name if isinstance(event, OtherEvent) else event.event


def store(
    engine: Engine, account: PushAccount, query: PushQuery, body: bytes, event: CardEvent, xml: str
) -> int | None:
    """The new inbox row's id, or None for a redelivered push. Raises ``push_guard.ReplayedPush``
    (storing nothing) if the push's timestamp and nonce came before with another body. One round
    trip on PostgreSQL (``push_writes.store``)."""
    return push_writes.store(
        engine,
        official_account_id=account.id,
        timestamp=push_guard.parse_timestamp(query.timestamp),
        nonce=query.nonce,
        body=body,
        kind=event_name(event)[:48] or "unknown",
        dedupe_key=dedupe_key(account, event),
        payload=xml,
    )
