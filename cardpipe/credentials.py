"""The one writer of access tokens and card api_tickets, and every reader's view of them.

Readers (api, workers) read the value cached in Redis, falling back to the credentials table.
Only :meth:`CredentialStore.refresh` calls WeChat, under a per-account Redis lock, and it re-reads
the stored value after taking the lock: of N processes that find a token expiring at once, one
fetches and N-1 reuse its result. A token WeChat rejects (40001/40014/42001) is expired only if
it is still the stored one (compare-and-expire), so a token already replaced is never dropped.

Every card api_ticket carries a version that grows by one whenever its value changes; tickets
record the version that signed them, which is how stale signatures are found.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from redis import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import Credential, CredentialKind, OfficialAccount
from wechat.client import CardApi, fetch_access_token, fetch_stable_token
from wechat.http import WeChatHttp

#: A reader refreshes (through the writer) only a value with less than this left to live;
#: refreshing ahead of expiry is the scheduler's job, with the configured margin.
READER_MIN_VALIDITY_S = 60
LOCK_TTL_S = 30
LOCK_WAIT_S = 20


def _cache_key(appid: str, kind: str) -> str:
    return f"cardpipe:credential:{appid}:{kind}"


def stats_key(appid: str) -> str:
    return f"cardpipe:wechat-stats:{appid}"


@dataclass(frozen=True, slots=True)
class StoredCredential:
    value: str = field(repr=False)
    expires_at: float
    version: int

    def remaining(self, now: float) -> float:
        return self.expires_at - now

    def to_json(self) -> str:
        return json.dumps({"value": self.value, "expires_at": self.expires_at, "version": self.version})

    @classmethod
    def from_json(cls, raw: bytes | str) -> StoredCredential:
        data = json.loads(raw)
        return cls(value=data["value"], expires_at=float(data["expires_at"]), version=int(data["version"]))


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    credential: StoredCredential
    fetched: bool
    #: The value changed (for the card ticket: outstanding tickets must be re-signed).
    rotated: bool


class CredentialStore:
    def __init__(
        self,
        redis: Redis,
        sessions: sessionmaker[Session],
        http: WeChatHttp,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._sessions = sessions
        self._http = http
        self._clock = clock

    # -- readers -------------------------------------------------------------------------------

    def access_token(self, appid: str) -> str:
        return self._read(appid, CredentialKind.ACCESS_TOKEN).value

    def card_ticket(self, appid: str) -> StoredCredential:
        return self._read(appid, CredentialKind.CARD_TICKET)

    def cached_card_ticket(self, appid: str) -> StoredCredential | None:
        """The cached ticket without any fallback: for the hot serve path's version check."""
        raw = self._redis.get(_cache_key(appid, CredentialKind.CARD_TICKET))
        return StoredCredential.from_json(raw) if raw else None

    def token_source(self, appid: str) -> StoredTokenSource:
        return StoredTokenSource(self, appid)

    def card_api(self, appid: str) -> CardApi:
        return CardApi(self._http, self.token_source(appid))

    def _read(self, appid: str, kind: str) -> StoredCredential:
        raw = self._redis.get(_cache_key(appid, kind))
        if raw:
            cached = StoredCredential.from_json(raw)
            if cached.remaining(self._clock()) > READER_MIN_VALIDITY_S:
                return cached
        return self.refresh(appid, kind, min_validity_s=READER_MIN_VALIDITY_S).credential

    # -- the writer ----------------------------------------------------------------------------

    def refresh(self, appid: str, kind: str, *, min_validity_s: float, force: bool = False) -> RefreshOutcome:
        """Make sure the stored ``kind`` lives at least ``min_validity_s`` more; fetch only if not."""
        with self._redis.lock(
            f"cardpipe:lock:credential:{appid}:{kind}", timeout=LOCK_TTL_S, blocking_timeout=LOCK_WAIT_S
        ):
            stored = self._load(appid, kind)
            if stored and not force and stored.remaining(self._clock()) > min_validity_s:
                self._cache(appid, kind, stored)
                return RefreshOutcome(stored, fetched=False, rotated=False)
            value, expires_in = self._fetch(appid, kind)
            version = (stored.version + (stored.value != value)) if stored else 1
            fresh = StoredCredential(value=value, expires_at=self._clock() + expires_in, version=version)
            self._save(appid, kind, fresh)
            self._cache(appid, kind, fresh)
            self._count(appid, "token_fetches" if kind == CredentialKind.ACCESS_TOKEN else "ticket_fetches")
            return RefreshOutcome(fresh, fetched=True, rotated=stored is not None and stored.value != value)

    def invalidate_token(self, appid: str, failed_token: str) -> bool:
        """Compare-and-expire: forget the stored token only if it is ``failed_token``."""
        self._count(appid, "token_invalid")
        kind = CredentialKind.ACCESS_TOKEN
        with self._redis.lock(
            f"cardpipe:lock:credential:{appid}:{kind}", timeout=LOCK_TTL_S, blocking_timeout=LOCK_WAIT_S
        ):
            stored = self._load(appid, kind)
            if stored is None or stored.value != failed_token:
                return False
            expired = StoredCredential(value=stored.value, expires_at=self._clock(), version=stored.version)
            self._save(appid, kind, expired)
            self._redis.delete(_cache_key(appid, kind))
            return True

    def _fetch(self, appid: str, kind: str) -> tuple[str, int]:
        if kind == CredentialKind.CARD_TICKET:
            ticket = self.card_api(appid).fetch_card_ticket()
            return ticket.value, ticket.expires_in
        with self._sessions() as session:
            account = _account(session, appid)
            secret, stable = account.app_secret, account.use_stable_token
        token = (
            fetch_stable_token(self._http, appid, secret) if stable else fetch_access_token(self._http, appid, secret)
        )
        return token.value, token.expires_in

    def _load(self, appid: str, kind: str) -> StoredCredential | None:
        with self._sessions() as session:
            account = _account(session, appid)
            row = session.scalars(
                select(Credential).where(Credential.official_account_id == account.id, Credential.kind == kind)
            ).one_or_none()
            if row is None:
                return None
            return StoredCredential(value=row.value, expires_at=row.expires_at.timestamp(), version=row.version)

    def _save(self, appid: str, kind: str, credential: StoredCredential) -> None:
        with self._sessions() as session, session.begin():
            account = _account(session, appid)
            row = session.scalars(
                select(Credential).where(Credential.official_account_id == account.id, Credential.kind == kind)
            ).one_or_none()
            if row is None:
                row = Credential(official_account_id=account.id, kind=kind)
                session.add(row)
            row.value = credential.value
            row.version = credential.version
            row.expires_at = datetime.fromtimestamp(credential.expires_at, UTC)
            row.fetched_at = datetime.now(UTC)

    def _cache(self, appid: str, kind: str, credential: StoredCredential) -> None:
        ttl_ms = int(credential.remaining(self._clock()) * 1000)
        if ttl_ms > 0:
            self._redis.set(_cache_key(appid, kind), credential.to_json(), px=ttl_ms)

    def _count(self, appid: str, counter: str) -> None:
        self._redis.hincrby(stats_key(appid), counter, 1)


class StoredTokenSource:
    """The client's ``TokenSource`` backed by the store: one account's token, never fetched here."""

    def __init__(self, store: CredentialStore, appid: str) -> None:
        self._store = store
        self._appid = appid

    def current(self) -> str:
        return self._store.access_token(self._appid)

    def invalidate(self, failed_token: str) -> None:
        self._store.invalidate_token(self._appid, failed_token)


def _account(session: Session, appid: str) -> OfficialAccount:
    account = session.scalars(select(OfficialAccount).where(OfficialAccount.appid == appid)).one_or_none()
    if account is None:
        raise LookupError(f"no official account {appid!r}")
    return account
