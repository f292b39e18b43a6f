"""Ops: queue depths, worker heartbeats and dead letters (list, requeue, discard)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Cookie, Header, HTTPException, Query, Response, status
from fastapi.responses import HTMLResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from cardpipe.db import get_sessionmaker
from cardpipe.metrics import build_registry
from cardpipe.routes.auth import AdminOnly
from cardpipe.routes.hygiene import page_csp
from cardpipe.routes.schemas import ERRORS
from cardpipe.runtime import redis_client
from cardpipe.services.queues import QueueMonitor
from workers.broker import broker

router = APIRouter(prefix="/ops", tags=["ops"], dependencies=[AdminOnly], responses=ERRORS)


class QueueOut(BaseModel):
    name: str
    ready: int
    delayed: int
    dead: int
    in_flight: int
    oldest_ready_age_s: float | None


class WorkerOut(BaseModel):
    worker_id: str
    age_s: float
    in_flight: int


class QueuesOut(BaseModel):
    queues: list[QueueOut]
    workers: list[WorkerOut]


class DeadLetterOut(BaseModel):
    queue: str
    redis_id: str
    message_id: str
    actor: str
    args: list[object]
    kwargs: dict[str, object]
    error: str
    retries: int
    failed_at: float


class CountOut(BaseModel):
    count: int


def _monitor() -> QueueMonitor:
    return QueueMonitor(broker)


def _known_queue(queue: str) -> str:
    if queue not in _monitor().queue_names():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no queue {queue!r}")
    return queue


@router.get("/queues", response_model=QueuesOut)
def get_queues() -> QueuesOut:
    monitor = _monitor()
    return QueuesOut(
        queues=[QueueOut.model_validate(q, from_attributes=True) for q in monitor.queues()],
        workers=[WorkerOut.model_validate(w, from_attributes=True) for w in monitor.workers()],
    )


@router.get("/dead-letters", response_model=list[DeadLetterOut])
def list_dead_letters(
    queue: str | None = Query(None, description="Only this queue."), limit: int = Query(100, ge=1, le=1000)
) -> list[DeadLetterOut]:
    monitor = _monitor()
    queues = [_known_queue(queue)] if queue else monitor.queue_names()
    return [
        DeadLetterOut.model_validate(letter, from_attributes=True)
        for name in queues
        for letter in monitor.dead_letters(name, limit)
    ]


@router.post("/dead-letters/{queue}/{redis_id}/requeue", response_model=CountOut)
def requeue_dead_letter(queue: str, redis_id: str) -> CountOut:
    if not _monitor().requeue(_known_queue(queue), redis_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dead letter {redis_id!r} in {queue!r}")
    return CountOut(count=1)


@router.delete("/dead-letters/{queue}/{redis_id}", response_model=CountOut)
def discard_dead_letter(queue: str, redis_id: str) -> CountOut:
    if not _monitor().purge(_known_queue(queue), redis_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dead letter {redis_id!r} in {queue!r}")
    return CountOut(count=1)


metrics_router = APIRouter(tags=["ops"], dependencies=[AdminOnly], responses=ERRORS)


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
def metrics() -> Response:
    registry = build_registry(_monitor(), redis_client(), get_sessionmaker())
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


page_router = APIRouter(tags=["ops"])
_PAGE = (Path(__file__).parent / "ops_page.html").read_text(encoding="utf-8")
#: The page's scripts, styles and translations, served from the package (no CDN).
STATIC_DIR = Path(__file__).parent / "ops_static"
LANGUAGES = ("en", "zh")
LANGUAGE_COOKIE = "cardpipe-lang"


def page_language(chosen: str | None, remembered: str | None, accept_language: str | None) -> str:
    """The switch's choice, else the remembered one, else the browser's most preferred of ours."""
    for candidate in (chosen, remembered):
        if candidate in LANGUAGES:
            return candidate
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        language = tag.strip().lower().split("-")[0]
        if language in LANGUAGES and quality > 0:
            ranked.append((-quality, position, language))
    return min(ranked)[2] if ranked else "en"


_PAGE_CSP = page_csp(_PAGE)


@page_router.get("/ops", response_class=HTMLResponse)
def ops_page(
    lang: str | None = Query(None, description="en or zh; remembered in a cookie"),
    remembered: str | None = Cookie(None, alias=LANGUAGE_COOKIE),
    accept_language: str | None = Header(None),
) -> HTMLResponse:
    """The ops page: a static shell in the operator's language (``?lang=``, else the cookie the
    switch left, else Accept-Language); its data comes from the admin endpoints with the token
    the operator types in."""
    language = page_language(lang, remembered, accept_language)
    response = HTMLResponse(_PAGE.replace('lang="en"', f'lang="{language}"', 1))
    response.headers["vary"] = "Accept-Language, Cookie"
    response.headers["content-security-policy"] = _PAGE_CSP
    response.headers["cache-control"] = "no-cache"
    if lang in LANGUAGES:
        response.set_cookie(LANGUAGE_COOKIE, language, max_age=365 * 86400, samesite="strict")
    return response
