"""Register official accounts and the mini programs bound to them. Secrets are write-only."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import MiniProgram, OfficialAccount


class UnknownAccount(LookupError):
    pass


@dataclass(frozen=True)
class OfficialAccountInput:
    appid: str
    app_secret: str
    server_token: str
    encoding_aes_key: str | None = None
    original_id: str | None = None
    name: str = ""
    use_stable_token: bool = True


def upsert_official_account(session: Session, data: OfficialAccountInput) -> OfficialAccount:
    """Create the OA, or replace its secrets and settings (an AppSecret reset is routine)."""
    account = session.scalars(select(OfficialAccount).where(OfficialAccount.appid == data.appid)).one_or_none()
    if account is None:
        account = OfficialAccount(appid=data.appid)
        session.add(account)
    account.app_secret = data.app_secret
    account.server_token = data.server_token
    account.encoding_aes_key = data.encoding_aes_key
    account.original_id = data.original_id
    account.name = data.name
    account.use_stable_token = data.use_stable_token
    session.flush()
    return account


def upsert_mini_program(session: Session, appid: str, app_secret: str, oa_appid: str, name: str = "") -> MiniProgram:
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
