"""The Mini Program's API: log in, ask for an order's claim, poll it, report ``wx.addCard``'s result.

Every endpoint but the login needs ``Authorization: Bearer <session token>``. An order that is not
the caller's answers 404, exactly like one that does not exist.

The poll (``GET /v1/orders/{order_no}/claim``) is the launch-day hot path; it lives in
``cardpipe.routes.claim_poll``, and this module only documents it.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from cardpipe.db import session_scope
from cardpipe.routes.auth import authenticates
from cardpipe.routes.claim_poll import (
    ORDER_NO_PATTERN,
    RETRY_AFTER_S,
    current_claims_blocking,
    poll_answer,
    request_issue,
)
from cardpipe.routes.schemas import ErrorResponse, InboundModel
from cardpipe.runtime import redis_client
from cardpipe.services import (
    claim_ownership,
    claim_payload,
    claim_results,
    login_limits,
    miniprogram_sessions,
    result_intake,
)
from cardpipe.services.claim_answers import card_ticket
from cardpipe.services.claim_ownership import OrderRef
from cardpipe.services.claim_payload import ClaimStatus
from cardpipe.services.claim_results import AddCardResult
from cardpipe.services.miniprogram_sessions import InvalidSession, MpSession
from cardpipe.settings import get_settings
from wechat.errors import BusinessError, MinuteQuotaError, WeChatError
from workers.claims import invalidate_claims
from workers.credentials import refresh_card_ticket_now
from workers.outbox import flush

router = APIRouter(prefix="/v1", tags=["claim"])

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="MiniProgramSession",
    description="The session token `POST /v1/sessions` returned.",
)

_401 = {"model": ErrorResponse, "description": "No session token, or a forged or expired one"}
_404 = {"model": ErrorResponse, "description": "The caller has no order with this number"}
_413 = {"model": ErrorResponse, "description": "Body over the size limit"}
_503 = {"model": ErrorResponse, "description": "WeChat is busy or over quota: retry after `Retry-After`"}


@authenticates
async def current_session(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> MpSession:
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "session token required (Authorization: Bearer …)")
    try:
        return miniprogram_sessions.verify_token(credentials.credentials)
    except InvalidSession as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from None


CurrentSession = Annotated[MpSession, Depends(current_session)]
OrderNo = Annotated[str, Path(pattern=ORDER_NO_PATTERN, description="The order number (printable ASCII, no `/`)")]


def _wechat_unavailable(exc: WeChatError) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        f"WeChat did not answer usefully (errcode {exc.errcode}); retry shortly",
        headers={"Retry-After": RETRY_AFTER_S},
    )


# --- models -------------------------------------------------------------------------------


class SessionIn(InboundModel):
    code: str = Field(min_length=1, max_length=128, description="`wx.login`'s code (single use, ~5 min)")
    appid: str = Field(pattern=r"^wx[0-9A-Za-z]{6,30}$", description="The mini program's appid")


class SessionOut(BaseModel):
    token: str = Field(description="Send as `Authorization: Bearer <token>`")
    expires_at: int = Field(description="Unix seconds")
    expires_in: int = Field(description="Seconds")
    openid: str = Field(description="The user's openid in this mini program")


class CardListItem(BaseModel):
    cardId: str
    cardExt: str = Field(description="A JSON string, passed to `wx.addCard` as is")


class ClaimPayload(BaseModel):
    """``ready``: pass ``cardList`` to ``wx.addCard`` unchanged. ``pending``: poll again after
    ``retry_after_ms``. ``done``: every ticket of the order has been claimed (or is gone)."""

    order_no: str
    status: ClaimStatus
    cardList: list[CardListItem] | None = Field(default=None, description="present when ready (empty when done)")
    retry_after_ms: int | None = Field(default=None, description="present when pending")


class ClaimRequested(BaseModel):
    order_no: str
    poll_url: str
    retry_after_ms: int


class ResultAccepted(BaseModel):
    duplicate: bool = Field(description="This exact result was already received; nothing new happened")
    resigned: bool = Field(description="Tickets the attempt spent got a fresh signature: poll again before retrying")
    poll_url: str


#: Orders one ``/v1/claims`` may name. WeChat documents no length limit for ``wx.addCard``'s
#: cardList (the protocol page: unverified); ten orders keeps a claim to one screen of cards.
MAX_ORDERS_PER_CLAIM = 10
BatchOrderNo = Annotated[str, Field(pattern=ORDER_NO_PATTERN)]


class BatchClaimIn(InboundModel):
    order_nos: list[BatchOrderNo] = Field(min_length=1, max_length=MAX_ORDERS_PER_CLAIM)


class OrderStatus(BaseModel):
    order_no: str
    status: ClaimStatus


class BatchClaim(BaseModel):
    """``ready``: pass ``cardList`` (every ready order's cards) to ``wx.addCard`` unchanged;
    ``pending``: nothing is ready yet, call again after ``retry_after_ms``; ``done``: every
    order is claimed. ``orders`` says where each order stands."""

    status: ClaimStatus
    cardList: list[CardListItem]
    orders: list[OrderStatus]
    retry_after_ms: int | None = None


class BatchResultIn(AddCardResult, InboundModel):
    order_nos: list[BatchOrderNo] = Field(min_length=1, max_length=MAX_ORDERS_PER_CLAIM)


class BatchResultAccepted(BaseModel):
    duplicate: bool = Field(description="This exact result was already received; nothing new happened")
    resigned: bool = Field(description="Tickets the attempt spent got a fresh signature: claim again before retrying")


def _poll_url(order_no: str) -> str:
    return f"/v1/orders/{order_no}/claim"


# --- sessions -----------------------------------------------------------------------------


@router.post(
    "/sessions",
    response_model=SessionOut,
    responses={
        401: {"model": ErrorResponse, "description": "WeChat refused the login code (used, expired, invalid)"},
        404: {"model": ErrorResponse, "description": "Unknown mini program"},
        413: _413,
        429: {
            "model": ErrorResponse,
            "description": "Too many logins from this address or to this mini program (or WeChat's per-user "
            "limit): retry after `Retry-After`",
        },
        502: {"model": ErrorResponse, "description": "WeChat refused the mini program's own credentials"},
        503: _503,
    },
)
def create_session(body: SessionIn, request: Request) -> SessionOut:
    """Exchange `wx.login`'s code for a session token (WeChat `jscode2session`). Logins are
    limited per client address and per mini program (each costs a call against its quota)."""
    settings = get_settings()
    limits = login_limits.LoginLimits(
        settings.login_limit_per_client, settings.login_limit_per_appid, settings.login_limit_window_s
    )
    client = request.client.host if request.client else "unknown"
    verdict = login_limits.check_login(redis_client(), limits, client=client, appid=body.appid)
    if not verdict.allowed:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"{verdict.reason}; retry after {verdict.retry_after_s} s",
            headers={"Retry-After": str(verdict.retry_after_s)},
        )
    try:
        token, session = miniprogram_sessions.login(body.appid, body.code)
    except miniprogram_sessions.UnknownMiniProgram as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except BusinessError as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, f"WeChat refused the login code (errcode {exc.errcode})"
        ) from None
    except MinuteQuotaError:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS, "too many logins; retry next minute", headers={"Retry-After": "60"}
        ) from None
    except WeChatError as exc:
        if exc.errcode is None or exc.errcode in (-1, 45009):
            raise _wechat_unavailable(exc) from None
        raise HTTPException(
            status.HTTP_502_BAD_GATEWAY, f"WeChat refused the mini program's credentials (errcode {exc.errcode})"
        ) from None
    return SessionOut(
        token=token,
        expires_at=session.expires_at,
        expires_in=max(0, session.expires_at - int(time.time())),
        openid=session.openid,
    )


# --- claim --------------------------------------------------------------------------------


@router.post(
    "/orders/{order_no}/claim",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ClaimRequested,
    responses={401: _401, 404: _404},
)
def request_claim(order_no: OrderNo, session: CurrentSession) -> ClaimRequested:
    """Idempotent: queue whatever the order still needs (a just-in-time issue), then poll."""
    ref = OrderRef(session.mp_appid, session.openid, order_no)
    with session_scope() as db:
        orders = claim_ownership.owned_orders(db, ref)
        if not orders:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such order")
        to_issue = claim_ownership.orders_to_issue(db, orders)
    request_issue(to_issue)
    return ClaimRequested(order_no=order_no, poll_url=_poll_url(order_no), retry_after_ms=claim_payload.RETRY_AFTER_MS)


@router.get(
    "/orders/{order_no}/claim",
    response_model=None,
    responses={
        200: {
            "model": ClaimPayload,
            "description": "The claim; `ETag` identifies it",
            "headers": {"ETag": {"schema": {"type": "string"}}, "Retry-After": {"schema": {"type": "integer"}}},
        },
        304: {"description": "Unchanged since the `If-None-Match` ETag"},
        401: _401,
        404: _404,
        503: _503,
    },
)
async def poll_claim(
    order_no: OrderNo,
    # Declares the security scheme in the schema; the token is read from ``authorization``.
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    if_none_match: Annotated[str | None, Header(description="The ETag of the claim the client holds")] = None,
) -> Response:
    """The `wx.addCard` payload of the caller's order, or `pending` with a retry hint. (Served by
    `ClaimPollFastPath`; this route documents it and answers what that layer declines.)"""
    answer = await poll_answer(authorization, order_no, if_none_match)
    return Response(content=answer.body, status_code=answer.status, headers=answer.headers)


@router.post(
    "/orders/{order_no}/claim/result",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ResultAccepted,
    responses={401: _401, 404: _404, 413: _413, 503: _503},
)
def post_claim_result(order_no: OrderNo, body: AddCardResult, session: CurrentSession) -> ResultAccepted:
    """What `wx.addCard` returned: stored, then applied by a worker (codes decrypted, tickets
    claimed). On a cancel or failure the spent tickets are re-signed before this answers, so poll
    again and retry; send the `cardList` you passed to `wx.addCard` so exactly those are."""
    accepted = _accept_result(session, [order_no], body)
    return ResultAccepted(
        duplicate=accepted.duplicate, resigned=bool(accepted.resigned_orders), poll_url=_poll_url(order_no)
    )


def _accept_result(session: MpSession, order_nos: list[str], result: AddCardResult) -> claim_results.Accepted:
    refs = [OrderRef(session.mp_appid, session.openid, order_no) for order_no in order_nos]
    try:
        return result_intake.receive(refs, result, _RESULT_PORTS, oa_appid=session.oa_appid)
    except claim_ownership.UnknownOrders as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except WeChatError as exc:
        raise _wechat_unavailable(exc) from None


_RESULT_PORTS = result_intake.ResultPorts(
    card_ticket=card_ticket,
    invalidate_actor=invalidate_claims.actor_name,
    send=flush,
    redis=redis_client,
    refresh_card_ticket=refresh_card_ticket_now.send,
)


class OpenCardItem(BaseModel):
    cardId: str
    code: str = Field(description="The real code, as `wx.openCard` wants it")


class CardsInPackage(BaseModel):
    order_no: str
    cardList: list[OpenCardItem] = Field(description="Pass to `wx.openCard` as is")


@router.get(
    "/orders/{order_no}/cards",
    response_model=CardsInPackage,
    responses={401: _401, 404: _404},
)
def cards_of_order(order_no: OrderNo, session: CurrentSession) -> CardsInPackage:
    """The order's tickets that are in the caller's WeChat card package (claimed or redeemed),
    with their real codes: the `cardList` for `wx.openCard`, to show a ticket after adding it."""
    with session_scope() as db:
        cards = claim_payload.cards_in_package(db, OrderRef(session.mp_appid, session.openid, order_no))
    if cards is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such order")
    return CardsInPackage(
        order_no=order_no, cardList=[OpenCardItem(cardId=card_id, code=code) for card_id, code in cards]
    )


# --- several orders in one wx.addCard -------------------------------------------------------


@router.post(
    "/claims",
    response_model=BatchClaim,
    responses={401: _401, 404: _404, 413: _413, 503: _503},
)
def claim_orders(body: BatchClaimIn, session: CurrentSession) -> BatchClaim:
    """Claim several of the caller's orders with one `wx.addCard`: the answer's `cardList` holds
    the cards of every order that is ready. Idempotent, like polling; call it again after
    `retry_after_ms` while some order is `pending`. Then post the result to `/v1/claims/result`
    with the same `order_nos`."""
    order_nos = list(dict.fromkeys(body.order_nos))
    try:
        answers = current_claims_blocking(session, order_nos)
    except claim_ownership.UnknownOrders as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except WeChatError as exc:
        raise _wechat_unavailable(exc) from None
    bodies = [json.loads(answers[order_no].body) for order_no in order_nos]
    card_list = [item for answer in bodies for item in answer.get("cardList") or []]
    statuses = [OrderStatus(order_no=answer["order_no"], status=answer["status"]) for answer in bodies]
    if card_list:
        return BatchClaim(status=ClaimStatus.READY, cardList=card_list, orders=statuses)
    if any(answer.status == ClaimStatus.PENDING for answer in statuses):
        return BatchClaim(
            status=ClaimStatus.PENDING, cardList=[], orders=statuses, retry_after_ms=claim_payload.RETRY_AFTER_MS
        )
    return BatchClaim(status=ClaimStatus.DONE, cardList=[], orders=statuses)


@router.post(
    "/claims/result",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchResultAccepted,
    responses={401: _401, 404: _404, 413: _413, 503: _503},
)
def post_claims_result(body: BatchResultIn, session: CurrentSession) -> BatchResultAccepted:
    """What `wx.addCard` returned for a `/v1/claims` cardList, with the `order_nos` that claim
    named: handled exactly like one order's result."""
    result = AddCardResult(errMsg=body.errMsg, cardList=body.cardList)
    accepted = _accept_result(session, list(dict.fromkeys(body.order_nos)), result)
    return BatchResultAccepted(duplicate=accepted.duplicate, resigned=bool(accepted.resigned_orders))
