"""Response shapes shared by several routers (documented in the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, model_validator

#: Ids are PostgreSQL BIGINTs: anything larger names nothing (and must not reach the database).
MAX_ID = 2**63 - 1
EventId = Annotated[int, Path(ge=1, le=MAX_ID, description="The event's id")]
TicketId = Annotated[int, Path(ge=1, le=MAX_ID, description="The ticket's id")]


class ErrorResponse(BaseModel):
    """Every 4xx answer: a human-readable reason."""

    detail: str


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(item) for item in value)
    return False


class InboundModel(BaseModel):
    """A request body. No text in it may hold a NUL character: PostgreSQL cannot store one, and
    no legitimate value (name, secret, code, reason) contains it."""

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: object) -> object:
        if _has_nul(data):
            raise ValueError("text must not contain NUL characters")
        return data


class FieldError(BaseModel):
    """One problem of a malformed request, as FastAPI reports it."""

    loc: list[str | int]
    msg: str
    type: str


class Unprocessable(BaseModel):
    """A malformed request (``detail`` lists the fields) or an unusable one (``detail`` says why)."""

    detail: str | list[FieldError]


#: A route's or router's documented answers other than its success (FastAPI's ``responses``).
Responses = dict[int | str, dict[str, Any]]

ERRORS: Responses = {
    401: {"model": ErrorResponse, "description": "No bearer token"},
    403: {"model": ErrorResponse, "description": "Token not accepted"},
    413: {"model": ErrorResponse, "description": "Body over the size limit"},
}
