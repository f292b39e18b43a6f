"""Register official accounts and the mini programs bound to them. Secrets are write-only."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import MiniProgram, OfficialAccount

#: What WeChat appids look like (``wx`` and 16 hex digits in practice): anything else can only
#: fail at WeChat, every time the scheduler tries it.
APPID_PATTERN = r"^wx[0-9A-Za-z]{6,30}$"


class UnknownAccount(LookupError):
    pass


@dataclass(frozen=True)
class OfficialAccountInput:
    appid: str
    app_secret: str
    server_token: str
    encoding_aes_key: str | None = None
    #: The server URL is in safe mode at WeChat: only encrypted pushes are accepted.
    safe_mode: bool = False
    original_id: str | None = None
    name: str = ""
    use_stable_token: bool = True


class AccountError(ValueError):
    """The registration is inconsistent; the message says why."""


def upsert_official_account(session: Session, data: OfficialAccountInput) -> OfficialAccount:
    """Create the OA, or replace its secrets and settings (an AppSecret reset is routine). New
    secrets clear a recorded configuration error: the next refresh tries them at once."""
    check_appid(data.appid)
    if data.safe_mode and not data.encoding_aes_key:
        raise AccountError("safe mode needs the EncodingAESKey")
    account = session.scalars(select(OfficialAccount).where(OfficialAccount.appid == data.appid)).one_or_none()
    if account is None:
        account = OfficialAccount(appid=data.appid)
        session.add(account)
    account.app_secret = data.app_secret
    account.server_token = data.server_token
    account.encoding_aes_key = data.encoding_aes_key
    account.safe_mode = data.safe_mode
    account.original_id = data.original_id
    account.name = data.name
    account.use_stable_token = data.use_stable_token
    account.config_error = account.config_error_since = account.config_retry_at = None
    account.config_failures = 0
    session.flush()
    return account


def check_appid(appid: str) -> None:
    if not re.fullmatch(APPID_PATTERN, appid):
        raise AccountError(f"{appid[:40]!r} is not a WeChat appid (wx followed by 6 to 30 letters or digits)")


def upsert_mini_program(session: Session, appid: str, app_secret: str, oa_appid: str, name: str = "") -> MiniProgram:
    check_appid(appid)
    account = official_account_by_appid(session, oa_appid)
    program = session.scalars(select(MiniProgram).where(MiniProgram.appid == appid)).one_or_none()
    if program is None:
        program = MiniProgram(appid=appid)
        session.add(program)
    program.app_secret = app_secret
    program.official_account_id = account.id
    program.name = name
    session.flush()
    return program


def official_account_by_appid(session: Session, appid: str) -> OfficialAccount:
    account = session.scalars(select(OfficialAccount).where(OfficialAccount.appid == appid)).one_or_none()
    if account is None:
        raise UnknownAccount(f"no official account {appid!r}")
    return account


def mini_program_by_appid(session: Session, appid: str) -> MiniProgram:
    program = session.scalars(select(MiniProgram).where(MiniProgram.appid == appid)).one_or_none()
    if program is None:
        raise UnknownAccount(f"no mini program {appid!r}")
    return program
