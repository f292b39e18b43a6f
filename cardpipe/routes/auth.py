"""Bearer-token checks for the admin and gate endpoints."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

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


def require_admin(credentials: BearerCredentials) -> None:
    _check(credentials, get_settings().admin_tokens, "admin")


def require_gate(credentials: BearerCredentials) -> None:
    settings = get_settings()
    _check(credentials, settings.gate_tokens + settings.admin_tokens, "gate")


AdminOnly = Depends(require_admin)
GateStaff = Depends(require_gate)
