"""The one writer of access tokens and card api_tickets, and every reader's view of them.

Readers (api, workers) read the value cached in Redis, falling back to the credentials table.
Only :meth:`CredentialStore.refresh` calls WeChat, under a per-account Redis lock, and it re-reads
the stored value after taking the lock: of N processes that find a token expiring at once, one
fetches and N-1 reuse its result. A token WeChat rejects (40001/40014/42001) is expired only if
it is still the stored one (compare-and-expire), so a token already replaced is never dropped.

Every card api_ticket carries a version that grows by one whenever its value changes; tickets
record the version that signed them, which is how stale signatures are found. A rotation calls
``on_ticket_rotated`` (the composition root, :mod:`cardpipe.runtime`, wires it to the listeners
registered in :mod:`cardpipe.rotation`).

Values are cached in Redis encrypted (:func:`cardpipe.secretbox.seal`, keys derived for this use
only): whoever reads Redis learns a ticket's version and expiry, not a usable token or ticket. The
hot poll path reads only the version; a value that does not decrypt (keys rotated) is a cache miss.

Every WeChat call made here or through :meth:`CredentialStore.card_api` passes the account's
:class:`~cardpipe.outbound.OutboundGuard` (rate limit, 45009/45011 discipline, counters).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from redis import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cardpipe import clock, secretbox
from cardpipe.outbound import GuardedCardApi, OutboundGuard, stats_key
from cardpipe.redis_values import as_text
from cardpipe.rotation import RotationListener
from cardpipe.settings import get_settings
from models import Credential, CredentialKind, OfficialAccount
from wechat.client import STABLE_TOKEN_PATH, TOKEN_PATH, AccessToken, CardApi, fetch_access_token, fetch_stable_token
from wechat.http import WeChatHttp

__all__ = [
    "CredentialStore",
    "RefreshOutcome",
    "StoredCredential",
    "StoredTokenSource",
    "card_ticket_cache_key",
    "refresh_failing_key",
    "stats_key",
]

LOCK_TTL_S = 30
LOCK_WAIT_S = 20
#: stable_token hands out a new token only in the last 300 s of the current one (protocol page
#: §1.2): asking earlier returns the same token, so a stable token is due inside this window.
STABLE_TOKEN_RENEWAL_S = 240
#: WeChat answers the same card ticket until it expires: after a fetch that brought nothing new,
#: the writer does not ask again for this long (unless forced or the value has expired), so
#: readers near the end of a ticket's life do not turn into a stream of getticket calls.
UNCHANGED_RECHECK_S = 60
#: How long the fingerprint of a token WeChat rejected is kept (to spot stable_token handing the
#: rejected token back, which then needs ``force_refresh``).
REJECTED_TOKEN_TTL_S = 3600

#: A forced access token fetch is not repeated within this long: retrying ``credentials refresh
#: --force`` after its card ticket part failed must not force the stable token again (45011, and
#: one of the 20 daily forced refreshes spent per retry).
FORCED_RECENTLY_S = 300

#: What the keys sealing cached credentials are derived for.
CACHE_PURPOSE = "credential-cache"


def _cache_key(appid: str, kind: str) -> str:
    return f"cardpipe:credential:{appid}:{kind}"


def card_ticket_cache_key(appid: str) -> str:
    """Where the current card ticket is cached (sealed value, readable version): the hot poll
    path reads its version in the same round trip as the payload."""
    return _cache_key(appid, CredentialKind.CARD_TICKET)


def refresh_failing_key(appid: str, kind: str) -> str:
    """Since when (epoch seconds) fetching ``kind`` has failed; absent once a fetch succeeds."""
    return f"cardpipe:credential:{appid}:{kind}:failing-since"


def _unchanged_key(appid: str, kind: str) -> str:
    return f"cardpipe:credential:{appid}:{kind}:unchanged"


def _rejected_key(appid: str) -> str:
    return f"cardpipe:credential:{appid}:rejected-token"


def _forced_key(appid: str, kind: str) -> str:
    return f"cardpipe:credential:{appid}:{kind}:forced"


def _fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredCredential:
    value: str = field(repr=False)
    expires_at: float
    version: int

    def remaining(self, now: float) -> float:
        return self.expires_at - now

    def to_cache(self) -> str:
        """The Redis form: the value sealed, expiry and version readable (the poll reads ``version``)."""
        sealed = secretbox.seal(CACHE_PURPOSE, self.value)
        return json.dumps({"sealed": sealed, "expires_at": self.expires_at, "version": self.version})

    @classmethod
    def from_cache(cls, raw: bytes | str) -> StoredCredential | None:
        """None for what does not unseal (written under other keys, or not by us): a cache miss."""
        try:
            data = json.loads(raw)
            value = secretbox.unseal(CACHE_PURPOSE, data["sealed"])
            return cls(value=value, expires_at=float(data["expires_at"]), version=int(data["version"]))
        except (ValueError, KeyError, TypeError, secretbox.SecretDecryptionError):
            return None


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    credential: StoredCredential
    fetched: bool
    #: The value changed (for the card ticket: outstanding tickets must be re-signed).
    rotated: bool


@dataclass(frozen=True, slots=True)
class _AccountKeys:
    app_secret: str = field(repr=False)
    use_stable_token: bool


class CredentialStore:
    def __init__(
        self,
        redis: Redis,
        sessions: sessionmaker[Session],
        http: WeChatHttp,
        *,
        guard: OutboundGuard | None = None,
        reader_min_validity_s: float | None = None,
        on_ticket_rotated: RotationListener | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._sessions = sessions
        self._http = http
        self._guard = guard or OutboundGuard.from_settings(redis, sessions)
        self._reader_min_validity_s = (
            get_settings().credential_reader_min_validity_s if reader_min_validity_s is None else reader_min_validity_s
        )
        self._on_ticket_rotated = on_ticket_rotated
        self._clock = clock

    @property
    def guard(self) -> OutboundGuard:
        return self._guard

    # -- readers -------------------------------------------------------------------------------

    def access_token(self, appid: str) -> str:
        return self._read(appid, CredentialKind.ACCESS_TOKEN).value

    def card_ticket(self, appid: str, *, cached: bytes | None = None) -> StoredCredential:
        """``cached``: the ticket's cache entry, if the caller just read it with other keys."""
        return self._read(appid, CredentialKind.CARD_TICKET, cached)

    def cached_card_ticket(self, appid: str) -> StoredCredential | None:
        """The cached ticket without any fallback: for the hot serve path's version check."""
        raw = self._redis.get(_cache_key(appid, CredentialKind.CARD_TICKET))
        return StoredCredential.from_cache(raw) if raw else None

    def stored(self, appid: str, kind: str) -> StoredCredential | None:
        """What the credentials table holds, whatever its age (ops views, never for signing)."""
        with self._sessions() as session:
            return self._load(session, appid, kind)

    def token_source(self, appid: str) -> StoredTokenSource:
        return StoredTokenSource(self, appid)

    def card_api(self, appid: str) -> CardApi:
        return GuardedCardApi(self._http, self.token_source(appid), self._guard, appid)

    def _read(self, appid: str, kind: str, raw: bytes | str | None = None) -> StoredCredential:
        if raw is None:
            raw = self._redis.get(_cache_key(appid, kind))
        cached = StoredCredential.from_cache(raw) if raw else None
        if cached is not None:
            remaining = cached.remaining(self._clock())
            if remaining > self._reader_min_validity_s or self._unchanged_lately(appid, kind, remaining):
                return cached
        return self.refresh(appid, kind, min_validity_s=self._reader_min_validity_s).credential

    # -- the writer ----------------------------------------------------------------------------

    def refresh(self, appid: str, kind: str, *, min_validity_s: float, force: bool = False) -> RefreshOutcome:
        """Make sure the stored ``kind`` lives at least ``min_validity_s`` more; fetch only if not.
        ``force`` fetches anyway (for a stable token: with ``force_refresh``, 20 a day), except an
        access token force-fetched in the last ``FORCED_RECENTLY_S``: a forced refresh retried
        after its card ticket part failed redoes only that part."""
        with self._redis.lock(
            f"cardpipe:lock:credential:{appid}:{kind}", timeout=LOCK_TTL_S, blocking_timeout=LOCK_WAIT_S
        ):
            if force and kind == CredentialKind.ACCESS_TOKEN and self._redis.exists(_forced_key(appid, kind)):
                force = False
            with self._sessions() as session:
                keys = _account_keys(session, appid)
                stored = self._load(session, appid, kind)
            if kind == CredentialKind.ACCESS_TOKEN and keys.use_stable_token:
                min_validity_s = min(min_validity_s, STABLE_TOKEN_RENEWAL_S)
            remaining = stored.remaining(self._clock()) if stored else 0.0
            if stored and not force and (remaining > min_validity_s or self._unchanged_lately(appid, kind, remaining)):
                self._cache(appid, kind, stored)
                return RefreshOutcome(stored, fetched=False, rotated=False)
            try:
                value, expires_in = self._fetch(appid, kind, keys, force=force)
            except Exception:
                self._redis.set(refresh_failing_key(appid, kind), self._clock(), nx=True)
                raise
            self._redis.delete(refresh_failing_key(appid, kind))
            if stored and stored.value == value:
                self._redis.set(_unchanged_key(appid, kind), "1", ex=UNCHANGED_RECHECK_S)
            version = (stored.version + (stored.value != value)) if stored else 1
            fresh = StoredCredential(value=value, expires_at=self._clock() + expires_in, version=version)
            self._save(appid, kind, fresh)
            self._cache(appid, kind, fresh)
            if force and kind == CredentialKind.ACCESS_TOKEN:
                self._redis.set(_forced_key(appid, kind), "1", ex=FORCED_RECENTLY_S)
            self._guard.count(appid, "token_fetches" if kind == CredentialKind.ACCESS_TOKEN else "ticket_fetches")
            rotated = stored is not None and stored.value != value
        if rotated and kind == CredentialKind.CARD_TICKET and self._on_ticket_rotated is not None:
            self._on_ticket_rotated(appid, version)
        return RefreshOutcome(fresh, fetched=True, rotated=rotated)

    def _unchanged_lately(self, appid: str, kind: str, remaining: float) -> bool:
        """A recent fetch brought back the stored value, which has not expired yet."""
        return remaining > 0 and bool(self._redis.exists(_unchanged_key(appid, kind)))

    def invalidate_token(self, appid: str, failed_token: str) -> bool:
        """Compare-and-expire: forget the stored token only if it is ``failed_token``."""
        self._guard.count(appid, "token_invalid")
        kind = CredentialKind.ACCESS_TOKEN
        with self._redis.lock(
            f"cardpipe:lock:credential:{appid}:{kind}", timeout=LOCK_TTL_S, blocking_timeout=LOCK_WAIT_S
        ):
            with self._sessions() as session:
                stored = self._load(session, appid, kind)
            if stored is None or stored.value != failed_token:
                return False
            expired = StoredCredential(value=stored.value, expires_at=self._clock(), version=stored.version)
            self._save(appid, kind, expired)
            self._redis.delete(_cache_key(appid, kind))
            self._redis.set(_rejected_key(appid), _fingerprint(failed_token), ex=REJECTED_TOKEN_TTL_S)
            return True

    def _fetch(self, appid: str, kind: str, keys: _AccountKeys, *, force: bool) -> tuple[str, int]:
        if kind == CredentialKind.CARD_TICKET:
            ticket = self.card_api(appid).fetch_card_ticket()
            return ticket.value, ticket.expires_in
        if keys.use_stable_token:
            token = self._fetch_stable(appid, keys.app_secret, force=force)
            rejected = self._redis.get(_rejected_key(appid))
            if not force and rejected is not None and as_text(rejected) == _fingerprint(token.value):
                # WeChat handed back the very token it just refused: only a forced refresh helps.
                token = self._fetch_stable(appid, keys.app_secret, force=True)
        else:
            token = self._guard.call(
                appid, TOKEN_PATH, lambda: fetch_access_token(self._http, appid, keys.app_secret), limited=False
            )
        return token.value, token.expires_in

    def _fetch_stable(self, appid: str, secret: str, *, force: bool) -> AccessToken:
        return self._guard.call(
            appid,
            STABLE_TOKEN_PATH,
            lambda: fetch_stable_token(self._http, appid, secret, force_refresh=force),
            limited=False,
        )

    def _load(self, session: Session, appid: str, kind: str) -> StoredCredential | None:
        row = session.execute(
            select(Credential.value, Credential.expires_at, Credential.version)
            .join(OfficialAccount, OfficialAccount.id == Credential.official_account_id)
            .where(OfficialAccount.appid == appid, Credential.kind == kind)
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
            if row.value != credential.value:
                row.rotated_at = clock.now()
            row.value = credential.value
            row.version = credential.version
            row.expires_at = datetime.fromtimestamp(credential.expires_at, UTC)
            row.fetched_at = clock.now()

    def _cache(self, appid: str, kind: str, credential: StoredCredential) -> None:
        ttl_ms = int(credential.remaining(self._clock()) * 1000)
        if ttl_ms > 0:
            self._redis.set(_cache_key(appid, kind), credential.to_cache(), px=ttl_ms)


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


def _account_keys(session: Session, appid: str) -> _AccountKeys:
    account = _account(session, appid)
    return _AccountKeys(app_secret=account.app_secret, use_stable_token=account.use_stable_token)
