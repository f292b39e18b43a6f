"""Response shapes shared by several routers (documented in the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import BaseModel

#: Ids are PostgreSQL BIGINTs: anything larger names nothing (and must not reach the database).
MAX_ID = 2**63 - 1
EventId = Annotated[int, Path(ge=1, le=MAX_ID, description="The event's id")]
TicketId = Annotated[int, Path(ge=1, le=MAX_ID, description="The ticket's id")]


class ErrorResponse(BaseModel):
    """Every 4xx answer: a human-readable reason."""

    detail: str


class FieldError(BaseModel):
    """One problem of a malformed request, as FastAPI reports it."""

    loc: list[str | int]
    msg: str
    type: str


class Unprocessable(BaseModel):
    """A malformed request (``detail`` lists the fields) or an unusable one (``detail`` says why)."""

    detail: str | list[FieldError]


ERRORS = {
    401: {"model": ErrorResponse, "description": "No bearer token"},
    403: {"model": ErrorResponse, "description": "Token not accepted"},
    413: {"model": ErrorResponse, "description": "Body over the size limit"},
}
