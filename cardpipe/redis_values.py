"""Values read back from Redis, typed as the project's clients return them.

Every Redis client of the project leaves ``decode_responses`` off, so a string reply is always
``bytes`` at run time. redis-py types it ``bytes | str`` (a client may be built either way); these
helpers narrow it, and fail loudly if a client that decodes ever reaches them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def as_bytes(value: bytes | str) -> bytes:
    """The reply as the client returned it (bytes)."""
    if not isinstance(value, bytes):
        raise TypeError(f"expected bytes from an undecoded Redis client, got {type(value).__name__}")
    return value


def as_text(value: bytes | str) -> str:
    """The reply decoded as UTF-8."""
    return as_bytes(value).decode()


def as_members(reply: Iterable[Any]) -> list[bytes]:
    """A sorted-set range's members."""
    return [as_bytes(member) for member in reply]


def as_scored(reply: Iterable[Any]) -> list[tuple[bytes, float]]:
    """A sorted-set range read ``withscores``: (member, score) pairs."""
    return [(as_bytes(member), float(score)) for member, score in reply]
