"""``/docs``: Swagger UI from the assets of the installed ``fastapi-offline`` package, not a CDN
(venues and intranets are often offline), under a CSP that allows its one inline script."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from cardpipe.routes.hygiene import page_csp

ASSETS_PATH = "/docs/assets"

router = APIRouter(include_in_schema=False)


def assets() -> StaticFiles:
    return StaticFiles(directory=Path(str(files("fastapi_offline") / "static")))


def _page(openapi_url: str, title: str) -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{title} - API docs",
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
    )
    html = bytes(page.body).decode("utf-8")
    # Swagger UI sets style attributes from script: those cannot be allowed by hash.
    csp = page_csp(html, style_src="'unsafe-inline'")
    return HTMLResponse(html, headers={"content-security-policy": csp, "cache-control": "no-cache"})


@router.get("/docs")
def docs() -> HTMLResponse:
    return _page("/openapi.json", "cardpipe")
