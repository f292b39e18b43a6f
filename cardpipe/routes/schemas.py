"""Response shapes shared by several routers (documented in the OpenAPI schema)."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorResponse(BaseModel):
    """Every 4xx answer: a human-readable reason."""

    detail: str


ERRORS = {
    401: {"model": ErrorResponse, "description": "No bearer token"},
    403: {"model": ErrorResponse, "description": "Token not accepted"},
    413: {"model": ErrorResponse, "description": "Body over the size limit"},
}
