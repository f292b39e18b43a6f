"""The HTTP layer: FastAPI app assembly. Endpoints validate, persist or read, and enqueue."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles

import workers.resign  # noqa: F401  (a rotation met by a request queues the re-sign)
from cardpipe.routes import (
    account_status,
    accounts,
    blocking,
    checkin,
    docs,
    events,
    gate,
    miniprogram,
    ops,
    ops_history,
    outages,
    readiness,
    redemptions,
    stats,
    wechat_push,
)
from cardpipe.routes.auth import authenticate_before_validation
from cardpipe.routes.claim_fast_path import ClaimFastPath
from cardpipe.routes.claim_poll import ClaimPollFastPath
from cardpipe.routes.hygiene import SecurityHeaders
from cardpipe.routes.limits import BodySizeLimit
from cardpipe.routes.scan_fast_path import ScanFastPath
from cardpipe.routes.wechat_push import PushFastPath
from cardpipe.settings import get_settings


@asynccontextmanager
async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The plain routes' thread count: the fast paths' (``blocking.api_threads``), which the
    connection pool follows."""
    to_thread.current_default_thread_limiter().total_tokens = blocking.api_threads()
    yield


def create_app() -> FastAPI:
    app = FastAPI(
        lifespan=app_lifespan,
        title="cardpipe",
        version="0.1.0",
        description="Pre-issues WeChat card tickets to Mini Program users at event scale.",
        docs_url=None,
        redoc_url=None,
        # cardpipe exports its own metrics (/metrics) and logs; FastAPI's OpenTelemetry hooks
        # would otherwise look the global providers up on every request, fast paths included.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.mount(docs.ASSETS_PATH, docs.assets(), name="docs-assets")
    app.include_router(docs.router)
    app.add_exception_handler(RequestValidationError, authenticate_before_validation)
    app.include_router(accounts.router)
    app.include_router(account_status.router)
    app.include_router(ops.router)
    app.include_router(ops.metrics_router)
    app.include_router(ops.page_router)
    app.include_router(ops_history.router)
    app.mount("/ops/static", StaticFiles(directory=ops.STATIC_DIR), name="ops-static")
    app.include_router(stats.router)
    app.include_router(redemptions.router)
    app.include_router(miniprogram.router)
    app.include_router(wechat_push.router)
    app.include_router(events.router)
    app.include_router(readiness.router)
    app.include_router(checkin.router)
    app.include_router(gate.router)
    app.include_router(gate.page_router)
    outages.install(app)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    settings = get_settings()
    app.add_middleware(PushFastPath)
    app.add_middleware(ClaimFastPath)
    app.add_middleware(ScanFastPath)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.max_body_bytes,
        path_limits=[
            (events.IMPORT_PATH_PATTERN, settings.max_import_bytes),
            (gate.SCANS_PATH_PATTERN, gate.SCANS_MAX_BYTES),
        ],
    )
    app.add_middleware(ClaimPollFastPath)
    app.add_middleware(SecurityHeaders)
    return app


app = create_app()
# What the import built lives as long as the process: keep it out of the collector's view, so a
# full collection under load scans request garbage only (it otherwise paused a worker ~90 ms).
gc.collect()
gc.freeze()
