"""Reading a request body in an ASGI layer and handing the request on unchanged.

The fast paths in front of FastAPI read the body to decide whether they answer a request
themselves; one they decline goes to the app with :func:`replaying`, which gives it every message
already read, then the rest, so the app sees the request exactly as it arrived.
"""

from __future__ import annotations

from starlette.types import Message, Receive


async def read_body(receive: Receive) -> tuple[bytes, list[Message]]:
    """The whole body, and the messages it came in (a disconnect included)."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return b"".join(chunks), messages
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), messages


def replaying(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` for the app after a layer read the body: what was read, then the rest."""
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
