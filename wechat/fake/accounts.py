"""Registered apps and simulated people: official accounts, mini programs, persons, openids,
single-use ``wx.login`` codes and the card test whitelist (protocol page §0, §8), and each OA's
back-office settings (IP whitelist, card permissions) that the go-live checks look at.

openids are per app (a person's MP openid differs from their OA openid); the unionid is shared.
Not thread-safe on its own: ``FakePlatform`` serialises access.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field

from wechat.fake.errcodes import ApiError


class UnknownEntity(LookupError):
    """A control call named an app, person, card or code that does not exist."""


class InvalidSetup(ValueError):
    """A control call asked for a configuration the fake cannot represent."""


@dataclass
class AccountSettings:
    """What an OA's administrator sets in the WeChat back office beside the server config: the IP
    whitelist of the token endpoints (None = switched off) and the card permissions granted."""

    ip_whitelist: list[str] | None = None
    card_feature: bool = True
    custom_code: bool = True


@dataclass
class OfficialAccount:
    appid: str
    secret: str
    token: str
    encoding_aes_key: str | None
    push_url: str | None
    safe_mode: bool
    original_id: str
    settings: AccountSettings = field(default_factory=AccountSettings)

    def check_caller_ip(self, ip: str) -> None:
        """40164, worded as WeChat words it, when the whitelist is on and ``ip`` is not in it."""
        allowed = self.settings.ip_whitelist
        if allowed is not None and ip not in allowed:
            raise ApiError(40164, errmsg=f"invalid ip {ip} ipv6 ::ffff:{ip}, not in whitelist")


@dataclass
class MiniProgram:
    appid: str
    secret: str
    oa_appid: str | None


@dataclass(frozen=True)
class Person:
    name: str
    unionid: str


@dataclass(frozen=True)
class LoginCode:
    person: str
    mp_appid: str
    expires_at: float


def _digest_id(prefix: str, *parts: str, length: int = 28) -> str:
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return (prefix + base64.urlsafe_b64encode(digest).decode().rstrip("="))[:length]


class Registry:
    def __init__(self) -> None:
        self.oas: dict[str, OfficialAccount] = {}
        self.mps: dict[str, MiniProgram] = {}
        self.persons: dict[str, Person] = {}
        self._login_codes: dict[str, LoginCode] = {}
        self._by_openid: dict[str, tuple[str, str]] = {}
        self._whitelist: set[tuple[str, str]] = set()

    def put_oa(self, oa: OfficialAccount) -> None:
        if oa.safe_mode and not oa.encoding_aes_key:
            raise InvalidSetup("safe mode needs an EncodingAESKey")
        if oa.appid in self.mps:
            raise InvalidSetup(f"{oa.appid} is already a mini program")
        previous = self.oas.get(oa.appid)
        if previous is not None:
            oa.settings = previous.settings
        self.oas[oa.appid] = oa

    def put_mp(self, mp: MiniProgram) -> None:
        if mp.appid in self.oas:
            raise InvalidSetup(f"{mp.appid} is already an official account")
        if mp.oa_appid is not None and mp.oa_appid not in self.oas:
            raise UnknownEntity(f"official account {mp.oa_appid}")
        self.mps[mp.appid] = mp

    def put_person(self, name: str, unionid: str | None = None) -> Person:
        person = Person(name, unionid or _digest_id("o", "unionid", name))
        self.persons[name] = person
        return person

    def oa(self, appid: str) -> OfficialAccount:
        try:
            return self.oas[appid]
        except KeyError:
            raise UnknownEntity(f"official account {appid}") from None

    def mp(self, appid: str) -> MiniProgram:
        try:
            return self.mps[appid]
        except KeyError:
            raise UnknownEntity(f"mini program {appid}") from None

    def person(self, name: str) -> Person:
        try:
            return self.persons[name]
        except KeyError:
            raise UnknownEntity(f"person {name}") from None

    def secret_of(self, appid: str) -> str | None:
        app = self.oas.get(appid) or self.mps.get(appid)
        return app.secret if app else None

    def openid(self, person: str, appid: str) -> str:
        """The person's openid in one app: stable, 28 characters, different per app."""
        self.person(person)
        openid = _digest_id("o", "openid", appid, person)
        self._by_openid[openid] = (appid, person)
        return openid

    def person_by_openid(self, appid: str, openid: str) -> str | None:
        owner = self._by_openid.get(openid)
        return owner[1] if owner and owner[0] == appid else None

    def system_openid(self, oa_appid: str) -> str:
        """FromUserName of platform events (card audits) that no person caused."""
        return _digest_id("o", "system", oa_appid)

    def whitelist(self, oa_appid: str, person: str) -> None:
        self.oa(oa_appid)
        self.person(person)
        self._whitelist.add((oa_appid, person))

    def is_whitelisted(self, oa_appid: str, person: str) -> bool:
        return (oa_appid, person) in self._whitelist

    def issue_login_code(self, person: str, mp_appid: str, expires_at: float) -> str:
        self.person(person)
        self.mp(mp_appid)
        code = secrets.token_hex(16)
        self._login_codes[code] = LoginCode(person, mp_appid, expires_at)
        return code

    def redeem_login_code(self, code: str, mp_appid: str, now: float) -> Person:
        """Single use: the code is gone after this call whether it was valid or not."""
        login = self._login_codes.pop(code, None)
        if login is None or login.mp_appid != mp_appid or now >= login.expires_at:
            raise ApiError(40029)
        return self.person(login.person)
