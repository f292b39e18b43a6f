"""Gates: each belongs to one check-in list of one event and has its own bearer token.

The token is shown once, when the gate is made, and stored only as its SHA-256: a database dump
does not let anyone scan. A request under a gate token is scoped to that gate's event and list
(:class:`GateIdentity`); gates scanning under the shared ``CARDPIPE_GATE_TOKENS`` name themselves
in the scan, and a gate name registered for the ticket's event picks that gate's list.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from cardpipe.services.checkin.lists import ListError, get_list
from models import Gate


@dataclass(frozen=True, slots=True)
class GateIdentity:
    gate_id: int
    name: str
    event_id: int
    list_id: int


@dataclass(frozen=True, slots=True)
class NewGate:
    identity: GateIdentity
    #: The bearer token, in the clear: only here, only once.
    token: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_gate(session: Session, event_id: int, list_id: int, name: str) -> NewGate:
    get_list(session, event_id, list_id)
    if session.scalar(select(Gate.id).where(Gate.event_id == event_id, Gate.name == name)) is not None:
        raise ListError(f"event {event_id} already has a gate named {name!r}")
    token = "gate_" + secrets.token_urlsafe(32)
    gate = Gate(event_id=event_id, list_id=list_id, name=name, token_hash=token_hash(token))
    session.add(gate)
    session.flush()
    return NewGate(GateIdentity(gate.id, name, event_id, list_id), token)


def event_gates(session: Session, event_id: int) -> list[GateIdentity]:
    return [
        GateIdentity(g.id, g.name, g.event_id, g.list_id)
        for g in session.scalars(select(Gate).where(Gate.event_id == event_id).order_by(Gate.id))
    ]


def gate_for_token(session: Session, token: str) -> GateIdentity | None:
    gate = session.scalars(select(Gate).where(Gate.token_hash == token_hash(token))).one_or_none()
    return None if gate is None else GateIdentity(gate.id, gate.name, gate.event_id, gate.list_id)
