"""The HTTP layer: FastAPI app assembly. Endpoints validate, persist or read, and enqueue."""

from __future__ import annotations

from fastapi import FastAPI

from cardpipe.routes import accounts, ops, stats
from cardpipe.routes.limits import BodySizeLimit
from cardpipe.settings import get_settings


def create_app() -> FastAPI:
    app = FastAPI(
        title="cardpipe",
        version="0.1.0",
        description="Pre-issues WeChat card tickets to Mini Program users at event scale.",
    )
    app.include_router(accounts.router)
    app.include_router(ops.router)
    app.include_router(ops.metrics_router)
    app.include_router(ops.page_router)
    app.include_router(stats.router)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(BodySizeLimit, max_bytes=get_settings().max_body_bytes)
    return app


app = create_app()
