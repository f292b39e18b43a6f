"""The fake's ASGI app: WeChat's endpoints with WeChat's envelope (HTTP 200, JSON, errors as
``{"errcode", "errmsg": "... rid: …"}``), fault injection and statistics around every call, event
pushes handed to the pusher, and the control API under ``/__fake__/``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from wechat.fake.accounts import InvalidSetup, UnknownEntity
from wechat.fake.api_ops import ROUTES, TOKEN_ENDPOINTS, Call, Route, appid_hint
from wechat.fake.control import control_router
from wechat.fake.errcodes import ApiError, error_body
from wechat.fake.parts import FakeParts
from wechat.fake.state import Outcome


def _endpoint(parts: FakeParts, path: str, route: Route) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def handle(request: Request) -> JSONResponse:
        client_ip = request.client.host if request.client else "127.0.0.1"
        call = Call(dict(request.query_params), await request.body(), client_ip)
        appid = appid_hint(parts.platform, route, call)
        parts.stats.call(path, appid)
        delay = parts.faults.latency(path, appid)
        if delay:
            await asyncio.sleep(delay)
        outcome = Outcome({})
        try:
            if request.method != route.method:
                raise ApiError(43001 if route.method == "GET" else 43002)
            injected = parts.faults.injected_errcode(path, appid)
            if injected is not None:
                raise ApiError(injected, "injected by the fake")
            outcome = route.handler(parts.platform, call)
            errcode = 0
        except ApiError as err:
            outcome.body, errcode = error_body(err), err.errcode
        parts.stats.answered(path, errcode)
        if errcode == 0 and path in TOKEN_ENDPOINTS and appid:
            parts.stats.token_fetched(appid)
        for target, event in outcome.pushes:
            parts.pusher.submit(target, event)
        return JSONResponse(outcome.body)

    return handle


async def _unknown_url(request: Request) -> JSONResponse:
    return JSONResponse(error_body(ApiError(40066)))


async def _unknown_entity(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"unknown {exc}"}, status_code=404)


async def _bad_value(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=400)


async def _refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse({"errcode": exc.errcode, "errmsg": exc.errmsg}, status_code=409)


def create_app(parts: FakeParts) -> FastAPI:
    app = FastAPI(title="fake api.weixin.qq.com", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(control_router(parts))
    for path, route in ROUTES.items():
        app.add_api_route(path, _endpoint(parts, path, route), methods=["GET", "POST"])
    app.add_api_route("/{rest:path}", _unknown_url, methods=["GET", "POST"])
    app.add_exception_handler(UnknownEntity, _unknown_entity)
    app.add_exception_handler(InvalidSetup, _bad_value)
    app.add_exception_handler(ApiError, _refused)
    return app
