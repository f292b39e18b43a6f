"""Bearer-token checks for the admin and gate endpoints, and authentication before validation.

FastAPI reports a malformed body (or query) before a dependency that raised could answer: an
unauthenticated caller would learn the shape of what it may not call, and a fuzzer sees 422s
where 401s belong. :func:`authenticate_before_validation` answers a validation error with the
route's own authentication error when the request does not pass it. The checks it runs are the
route's dependencies marked :func:`authenticates`.
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request, status
from fastapi.dependencies.models import Dependant
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.responses import Response

from cardpipe.db import session_scope
from cardpipe.services.checkin.gates import GateIdentity, gate_for_token
from cardpipe.settings import get_settings

_bearer = HTTPBearer(auto_error=False)
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _matches(given: str, accepted: list[SecretStr]) -> bool:
    return any(hmac.compare_digest(given.encode(), token.get_secret_value().encode()) for token in accepted)


def _check(credentials: HTTPAuthorizationCredentials | None, accepted: list[SecretStr], role: str) -> None:
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"{role} bearer token required")
    if not _matches(credentials.credentials, accepted):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"not a valid {role} token")


Check = TypeVar("Check", bound=Callable[..., Any])

#: The dependencies marked by :func:`authenticates`.
_AUTHENTICATION_CHECKS: set[Callable[..., Any]] = set()


def authenticates(check: Check) -> Check:
    """Mark a dependency taking the request's bearer credentials as an authentication check."""
    _AUTHENTICATION_CHECKS.add(check)
    return check


@authenticates
def require_admin(credentials: BearerCredentials) -> None:
    _check(credentials, get_settings().admin_tokens, "admin")


@authenticates
def gate_identity(credentials: BearerCredentials) -> GateIdentity | None:
    """A gate's own token names its gate (and so its event and list); a shared gate or admin
    token names none (None): the scan then says which gate and event it is."""
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "gate bearer token required")
    settings = get_settings()
    if _matches(credentials.credentials, settings.gate_tokens + settings.admin_tokens):
        return None
    with session_scope() as session:
        identity = gate_for_token(session, credentials.credentials)
    if identity is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "not a valid gate token")
    return identity


def require_own_gate(identity: Annotated[GateIdentity | None, Depends(gate_identity)]) -> GateIdentity:
    """Endpoints that serve one gate's list (snapshot, deltas, offline upload) need its own token."""
    if identity is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this endpoint needs a gate's own token (made with its list)")
    return identity


AdminOnly = Depends(require_admin)
GateScope = Annotated[GateIdentity | None, Depends(gate_identity)]
OwnGate = Annotated[GateIdentity, Depends(require_own_gate)]


def _checks(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None and dependency.call in _AUTHENTICATION_CHECKS:
            yield dependency.call
        yield from _checks(dependency)


async def authenticate_before_validation(request: Request, exc: Exception) -> Response:
    """A validation error of a route the request is not authenticated for is its 401/403."""
    assert isinstance(exc, RequestValidationError)
    route = request.scope.get("route")
    if isinstance(route, APIRoute):
        credentials = await _bearer(request)
        for check in _checks(route.dependant):
            try:
                outcome = check(credentials)
                if inspect.isawaitable(outcome):
                    await outcome
            except HTTPException as refused:
                return await http_exception_handler(request, refused)
    return await request_validation_exception_handler(request, exc)
