"""Who hears about a card api_ticket rotation: a registry of listeners, filled at import time.

The credential store (core) must not know who reacts to a new ticket, and the reaction (queueing
the bulk re-sign) lives in an entry point, ``workers.resign``, which registers itself here
when it is imported. Every process that can rotate a ticket (workers, api, the CLI, the scheduler)
imports ``workers`` and so carries the listener; a process that imports only the core rotates
without re-signing, as a :class:`~cardpipe.credentials.CredentialStore` built with no listener does.

Invariants: a listener is registered at most once (importing a module twice does not double the
re-sign); listeners run in registration order, in the thread that rotated, after the new version
is stored; an exception from a listener propagates to the caller of the refresh.
"""

from __future__ import annotations

from collections.abc import Callable

#: Called with the account's appid and the new ticket version.
RotationListener = Callable[[str, int], None]

_listeners: list[RotationListener] = []


def on_ticket_rotated(listener: RotationListener) -> RotationListener:
    """Registers ``listener`` (once) for every later rotation; returns it, so it works as a decorator."""
    if listener not in _listeners:
        _listeners.append(listener)
    return listener


def listeners() -> tuple[RotationListener, ...]:
    """The registered listeners, in the order they run."""
    return tuple(_listeners)


def notify_ticket_rotated(appid: str, version: int) -> None:
    """Tells every registered listener that ``appid``'s card api_ticket is now ``version``."""
    for listener in tuple(_listeners):
        listener(appid, version)
