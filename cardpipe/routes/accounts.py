"""Admin: register official accounts and mini programs (secrets go in, never come out)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel, Field

from cardpipe.db import session_scope
from cardpipe.routes.auth import AdminOnly
from cardpipe.routes.schemas import ERRORS, ErrorResponse, InboundModel
from cardpipe.services import accounts

router = APIRouter(prefix="/v1/admin", tags=["accounts"], dependencies=[AdminOnly], responses=ERRORS)

APPID_PATTERN = accounts.APPID_PATTERN
APPID = Field(pattern=APPID_PATTERN, description="WeChat appid (wx…)")
AppIdPath = Annotated[str, Path(pattern=APPID_PATTERN, description="WeChat appid (wx…)")]


class OfficialAccountIn(InboundModel):
    app_secret: str = Field(min_length=8, max_length=128)
    server_token: str = Field(min_length=3, max_length=32, description="Token of the server URL (3–32 chars)")
    encoding_aes_key: str | None = Field(
        default=None, min_length=43, max_length=43, pattern=r"^[0-9A-Za-z+/]{43}$", description="Safe-mode key"
    )
    safe_mode: bool = Field(
        default=False, description="The server URL is in safe mode (or compatible mode): refuse plain pushes"
    )
    original_id: str | None = Field(default=None, max_length=64, description="gh_… original id")
    name: str = Field(default="", max_length=128)
    use_stable_token: bool = True


class OfficialAccountOut(BaseModel):
    appid: str
    name: str
    original_id: str | None
    safe_mode_key_set: bool
    safe_mode: bool
    use_stable_token: bool


class MiniProgramIn(InboundModel):
    app_secret: str = Field(min_length=8, max_length=128)
    official_account_appid: str = APPID
    name: str = Field(default="", max_length=128)


class MiniProgramOut(BaseModel):
    appid: str
    name: str
    official_account_appid: str


@router.put(
    "/official-accounts/{appid}",
    response_model=OfficialAccountOut,
    responses={409: {"model": ErrorResponse, "description": "Safe mode without an EncodingAESKey"}},
)
def put_official_account(appid: AppIdPath, body: OfficialAccountIn) -> OfficialAccountOut:
    try:
        with session_scope() as session:
            account = accounts.upsert_official_account(
                session, accounts.OfficialAccountInput(appid=appid, **body.model_dump())
            )
            return OfficialAccountOut(
                appid=account.appid,
                name=account.name,
                original_id=account.original_id,
                safe_mode_key_set=account.encoding_aes_key is not None,
                safe_mode=account.safe_mode,
                use_stable_token=account.use_stable_token,
            )
    except accounts.AccountError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc


@router.put(
    "/mini-programs/{appid}",
    response_model=MiniProgramOut,
    responses={404: {"model": ErrorResponse, "description": "No such official account"}},
)
def put_mini_program(appid: AppIdPath, body: MiniProgramIn) -> MiniProgramOut:
    try:
        with session_scope() as session:
            program = accounts.upsert_mini_program(
                session, appid, body.app_secret, body.official_account_appid, body.name
            )
            return MiniProgramOut(
                appid=program.appid, name=program.name, official_account_appid=body.official_account_appid
            )
    except accounts.UnknownAccount as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
