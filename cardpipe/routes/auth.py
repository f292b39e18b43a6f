"""Bearer-token checks for the admin and gate endpoints."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

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


def require_admin(credentials: BearerCredentials) -> None:
    _check(credentials, get_settings().admin_tokens, "admin")


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
