"""The official account's server URL: WeChat's URL check and its card event pushes.

A push is checked (signature; in safe mode also msg_signature and the appid inside the payload),
stored in the inbox under its dedupe key and answered ``success`` at once; the workers' push
drain applies it.
A push that fails a check is refused with a 4xx and nothing is stored: a stale timestamp, a
(timestamp, nonce) replayed with another body and a plain push to a safe-mode account are 403s.
Oversized bodies are refused by the app's body-size middleware before anything reads them.

:class:`PushFastPath`, a small ASGI layer in front of the app (inside the body-size limit),
receives the common push — well-formed, signed, of a known account — without FastAPI's routing,
parameter validation and dependency machinery, which cost more than the push's own checks and
write. Whatever it does not store (a parameter missing or malformed, a failed check, an error of
the database) goes on to the FastAPI route with the body it read: the route makes the same checks
and gives the 4xx, or rides out the database restart, exactly as without the layer.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Body, HTTPException, Path, Query, status
from fastapi.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from cardpipe.db import get_engine
from cardpipe.routes.asgi_body import read_body, replaying
from cardpipe.routes.blocking import run_blocking
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
        return pushes.store(get_engine(), account, query, body, event, xml)

    try:
        ride_out_database_restart(store)
    except SignatureError as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    return PlainTextResponse("success")


PUSH_PATH = re.compile(r"/wechat/(wx[0-9A-Za-z]{6,30})/events")
#: The route's query parameters and their length limits (required ones first).
_REQUIRED = {"signature": 64, "timestamp": 16, "nonce": 64}
_OPTIONAL = {"openid": 64, "encrypt_type": 8, "msg_signature": 64}
_LIMITS = {**_REQUIRED, **_OPTIONAL}
_SUCCESS = b"success"


def _push_query(query_string: bytes) -> PushQuery | None:
    """The query as the route would validate it, or None for anything the route should answer."""
    try:
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return None
    params = dict(pairs)
    if len(params) != len(pairs) or not params.keys() <= _LIMITS.keys():
        return None
    if any(not 0 < len(params.get(name, "")) <= limit for name, limit in _REQUIRED.items()) or any(
        len(value) > _LIMITS[name] for name, value in params.items()
    ):
        return None
    return PushQuery(
        params["signature"],
        params["timestamp"],
        params["nonce"],
        params.get("encrypt_type"),
        params.get("msg_signature"),
    )


def _store_if_plain(oa_appid: str, query_string: bytes, body: bytes) -> bool:
    """Store a push that passes every check (True); False leaves the push to the route."""
    query = _push_query(query_string)
    if query is None:
        return False
    try:
        account = pushes.push_account(oa_appid)
        event, xml = pushes.open_push(account, query, body, now=time.time(), max_age_s=get_settings().push_max_age_s)
        pushes.store(get_engine(), account, query, body, event, xml)
    except Exception:  # the route makes the same checks and answers what failed
        return False
    return True


class PushFastPath:
    """Pure ASGI: stores ``POST /wechat/{oa_appid}/events`` pushes that pass every check and
    answers ``success``; everything else goes to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = PUSH_PATH.fullmatch(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        body, messages = await read_body(receive)
        if messages[-1]["type"] != "http.request":
            return  # the client went away
        if not await run_blocking(_store_if_plain, match.group(1), scope["query_string"], body):
            await self.app(scope, replaying(messages, receive), send)
            return
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(_SUCCESS))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": _SUCCESS})
