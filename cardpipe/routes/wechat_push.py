"""The official account's server URL: WeChat's URL check and its card event pushes.

A push is checked (signature; in safe mode also msg_signature and the appid inside the payload),
stored in the inbox under its dedupe key and answered ``success`` at once; the workers' push
drain applies it.
A push that fails a check is refused with a 4xx and nothing is stored: a stale timestamp, a
(timestamp, nonce) replayed with another body and a plain push to a safe-mode account are 403s.
Oversized bodies are refused by the app's body-size middleware before anything reads them.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Query, status
from fastapi.responses import PlainTextResponse

from cardpipe.db import get_engine
from cardpipe.routes.outages import ride_out_database_restart
from cardpipe.runtime import redis_client
from cardpipe.services import pushes
from cardpipe.services.pushes import NotAnEvent, PushAccount, PushQuery
from cardpipe.services.readiness import signals
from cardpipe.settings import get_settings
from wechat.errors import SignatureError
from wechat.pushes import EventParseError

router = APIRouter(prefix="/wechat", tags=["wechat"])

AppId = Annotated[str, Path(pattern=r"^wx[0-9A-Za-z]{6,30}$", description="The official account's appid")]
Signature = Annotated[str, Query(min_length=1, max_length=64, description="sha1 of sorted [token, timestamp, nonce]")]
Timestamp = Annotated[str, Query(min_length=1, max_length=16)]
Nonce = Annotated[str, Query(min_length=1, max_length=64)]

_TEXT = {"content": {"text/plain": {"schema": {"type": "string"}}}}
#: Errors are JSON although the route's own answers are text (``model=`` would document them as
#: text/plain); ``ErrorResponse`` is in the schema's components through the other routers.
_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Malformed push", **_ERROR},
    403: {
        "description": "Signature, msg_signature or safe-mode payload does not check out; timestamp outside the "
        "window; a plain push to a safe-mode account; a replayed timestamp and nonce with another body",
        **_ERROR,
    },
    404: {"description": "Unknown official account", **_ERROR},
    413: {"description": "Body over the size limit", **_ERROR},
}


def _account(appid: str) -> PushAccount:
    try:
        return pushes.push_account(appid)
    except pushes.UnknownAccount as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


@router.get(
    "/{oa_appid}/events",
    response_class=PlainTextResponse,
    responses={200: {"description": "`echostr`, verbatim", **_TEXT}, **_ERRORS},
)
def verify_server_url(
    oa_appid: AppId,
    signature: Signature,
    timestamp: Timestamp,
    nonce: Nonce,
    echostr: Annotated[str, Query(min_length=1, max_length=256)],
) -> PlainTextResponse:
    """WeChat's server URL check: echo `echostr` if the signature is ours."""
    account = _account(oa_appid)
    try:
        pushes.verify_signature(account, signature, timestamp, nonce)
    except SignatureError as exc:
        signals.record_refused_push(redis_client(), oa_appid, f"URL check: {exc}")
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    signals.record_url_check(redis_client(), oa_appid)
    return PlainTextResponse(echostr)


@router.post(
    "/{oa_appid}/events",
    response_class=PlainTextResponse,
    responses={200: {"description": "`success`: stored (or already stored), processing is queued", **_TEXT}, **_ERRORS},
)
def receive_push(
    oa_appid: AppId,
    body: Annotated[bytes, Body(media_type="application/xml", description="The event XML, or the safe-mode envelope")],
    signature: Signature,
    timestamp: Timestamp,
    nonce: Nonce,
    openid: Annotated[str | None, Query(max_length=64, description="FromUserName (informative)")] = None,
    encrypt_type: Annotated[str | None, Query(max_length=8, description="`aes` in safe mode")] = None,
    msg_signature: Annotated[str | None, Query(max_length=64, description="safe mode: sha1 incl. Encrypt")] = None,
) -> PlainTextResponse:
    """A card event push. Answered `success` as soon as it is stored; redeliveries are no-ops."""
    account = _account(oa_appid)
    query = PushQuery(signature, timestamp, nonce, encrypt_type, msg_signature)
    settings = get_settings()
    try:
        event, xml = pushes.open_push(account, query, body, now=time.time(), max_age_s=settings.push_max_age_s)
    except SignatureError as exc:
        signals.record_refused_push(redis_client(), oa_appid, str(exc))
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    except EventParseError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    except NotAnEvent:
        return PlainTextResponse("success")

    # The replay guard's pair and the inbox row commit together; the workers' push drain takes
    # the row from there.
    def store() -> int | None:
        with get_engine().begin() as connection:
            return pushes.store(connection, account, query, body, event, xml)

    try:
        ride_out_database_restart(store)
    except SignatureError as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    return PlainTextResponse("success")
