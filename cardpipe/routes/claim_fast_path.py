"""The Mini Program's login, claim and result posts in front of FastAPI: a launch's write hot paths.

Each user of a launch logs in (``POST /v1/sessions``), makes one ``POST /v1/claims`` and one
result post (``POST /v1/claims/result`` or ``POST /v1/orders/{order_no}/claim/result``);
profiling the launch benchmark showed FastAPI's routing, validation and dependency resolution
costing about as much CPU as the calls' own work. :class:`ClaimFastPath`, a small ASGI layer
inside the body-size limit, serves a well-formed (and but for the login, authenticated) call
itself, with the route's own pieces: the session token checked by
``miniprogram_sessions.verify_token`` (as the route's ``current_session``), the body validated by
the route's own model from the parsed JSON (as FastAPI does), and the route function itself called
(through ``blocking.run_blocking`` when it is a plain one), its answer serialized by its response model. The
login route is handed the request as FastAPI would (its client address counts against the login
limit exactly as before).

Anything else — no or a bad token, a body that is not JSON or not valid, another content type, a
route that answers an error (404, 503) or fails — goes to the FastAPI route with the body read,
which answers as before and documents the endpoints in the OpenAPI schema. The claim and result
routes are idempotent (a result is deduplicated on its content, a claim only reads and serves), so
a call the route answers after this layer gave up on it has the route's own effect. The login's
refusals (429, 401, 404, 502, 503) are answered here, as FastAPI answers an ``HTTPException``:
the attempt was counted against the login limit and may have asked WeChat, and is not made twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from cardpipe.routes import miniprogram
from cardpipe.routes.asgi_body import read_body, replaying
from cardpipe.routes.blocking import run_blocking
from cardpipe.routes.claim_poll import ORDER_NO_PATTERN, bearer_token
from cardpipe.services import miniprogram_sessions
from cardpipe.services.claim_results import AddCardResult
from cardpipe.services.miniprogram_sessions import MpSession

_ORDER_RESULT_PATH = re.compile(r"/v1/orders/(" + ORDER_NO_PATTERN.strip("^$") + r")/claim/result")
_JSON = b"application/json"


@dataclass(frozen=True, slots=True)
class _Request:
    """What a call carries besides its body: the ASGI scope, the caller's session (None for the
    login) and the order number in the path (results of one order)."""

    scope: Scope
    session: MpSession | None
    order_no: str | None = None

    @property
    def caller(self) -> MpSession:
        assert self.session is not None
        return self.session


@dataclass(frozen=True, slots=True)
class _Call:
    """How one endpoint is served: its body model, its success status and the route's call."""

    model: type[BaseModel]
    status: int
    answer: Callable[[Any, _Request], Awaitable[BaseModel]]
    authenticated: bool = True


async def _login(body: Any, request: _Request) -> BaseModel:
    return await run_blocking(miniprogram.create_session, body, Request(request.scope))


async def _claims(body: Any, request: _Request) -> BaseModel:
    return await run_blocking(miniprogram.claim_orders, body, request.caller)


async def _claims_result(body: Any, request: _Request) -> BaseModel:
    return await run_blocking(miniprogram.post_claims_result, body, request.caller)


async def _order_result(body: Any, request: _Request) -> BaseModel:
    assert request.order_no is not None
    return await run_blocking(miniprogram.post_claim_result, request.order_no, body, request.caller)


_CALLS = {
    "/v1/sessions": _Call(miniprogram.SessionIn, 200, _login, authenticated=False),
    "/v1/claims": _Call(miniprogram.BatchClaimIn, 200, _claims),
    "/v1/claims/result": _Call(miniprogram.BatchResultIn, 202, _claims_result),
}
_ORDER_RESULT = _Call(AddCardResult, 202, _order_result)


class _Declined(Exception):
    """Not a call this layer answers: the FastAPI route does."""


class ClaimFastPath:
    """Pure ASGI: answers well-formed (authenticated) login, claim and result posts; everything
    else goes to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call, order_no = self._call(scope)
        if call is None:
            await self.app(scope, receive, send)
            return
        authorization: str | None = None
        content_type: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.partition(b";")[0].strip().lower()
        body, messages = await read_body(receive)
        try:
            if content_type != _JSON or messages[-1]["type"] != "http.request":
                raise _Declined
            session = None
            if call.authenticated:
                token = bearer_token(authorization)
                if token is None:
                    raise _Declined
                session = miniprogram_sessions.verify_token(token)
            answer = await call.answer(call.model.model_validate(json.loads(body)), _Request(scope, session, order_no))
        except HTTPException as refused:
            if call.authenticated:
                await self.app(scope, replaying(messages, receive), send)
            else:  # the login counted and asked WeChat: answered here, not done twice
                await _refuse(send, refused)
            return
        except Exception:  # _Declined, InvalidSession, ValueError, ValidationError, a database error…
            await self.app(scope, replaying(messages, receive), send)
            return
        await _answer(send, call.status, answer)

    @staticmethod
    def _call(scope: Scope) -> tuple[_Call | None, str | None]:
        if scope["type"] != "http" or scope["method"] != "POST":
            return None, None
        path = scope["path"]
        if (call := _CALLS.get(path)) is not None:
            return call, None
        if path.endswith("/claim/result") and (match := _ORDER_RESULT_PATH.fullmatch(path)) is not None:
            return _ORDER_RESULT, match.group(1)
        return None, None


async def _answer(send: Send, status: int, answer: BaseModel) -> None:
    content = answer.model_dump_json().encode("utf-8")
    headers = [(b"content-type", _JSON), (b"content-length", str(len(content)).encode("ascii"))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


async def _refuse(send: Send, refused: HTTPException) -> None:
    """The route's refusal, as FastAPI's handler of ``HTTPException`` answers it."""
    content = json.dumps({"detail": refused.detail}).encode("utf-8")
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (refused.headers or {}).items()]
    headers += [(b"content-type", _JSON), (b"content-length", str(len(content)).encode("ascii"))]
    await send({"type": "http.response.start", "status": refused.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": content})
