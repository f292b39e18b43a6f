"""``POST /v1/redemptions`` in front of FastAPI: the gates' hot path.

Profiling the gates' benchmark showed FastAPI's routing, dependency resolution and thread hand-off
costing about as much CPU as the scan's own database work, and every scan paying a second
transaction (plus a pooled connection's ping) to mark its consume intent sent. So
:class:`ScanFastPath`, a small ASGI layer, answers a well-formed, authenticated scan itself:

- the bearer token is checked as ``routes.auth.gate_identity`` checks it (a shared gate or admin
  token names no gate; a gate's own token names its gate), a gate's own token resolved through
  :class:`GateTokens`, which remembers a token's gate for at most ``GATE_TOKEN_TTL_S``;
- the body is parsed and validated by the route's own schema (``RedemptionIn``), and the scan
  redeemed and serialized by the route's own :func:`reply_to_scan`, in a worker thread (at most
  ``SCAN_THREADS`` at once per process: more would only queue inside PostgreSQL and hold more of
  its connections);
- the consume intents the scans committed are sent by :class:`IntentBatches`, together, every
  ``SEND_EVERY_S``: one outbox update marks a batch sent, not one transaction per scan.

Anything else (no or an unknown token, a body that is not a valid scan, another content type) goes
to the FastAPI route unchanged, body included, which answers its 401/403/413/422 as before and
documents the endpoint in the OpenAPI schema.

Intents waiting in a batch when the process stops are committed and unsent: the outbox relay
sends them within a couple of seconds, as for any writer that did not get to flush.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Sequence

from anyio import CapacityLimiter, to_thread
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Receive, Scope, Send

from cardpipe.db import session_scope
from cardpipe.routes.asgi_body import read_body, replaying
from cardpipe.routes.claim_poll import bearer_token
from cardpipe.routes.outages import database_unreachable, unavailable
from cardpipe.routes.redemptions import RedemptionIn, reply_to_scan
from cardpipe.services.checkin.gates import GateIdentity, gate_for_token, token_hash
from cardpipe.services.outbox import Intent
from cardpipe.settings import get_settings
from workers.outbox import flush

log = logging.getLogger(__name__)

SCAN_PATH = "/v1/redemptions"
#: A gate token's gate is remembered this long: a gate deleted from the database keeps being
#: answered by a process that saw its token within the last ``GATE_TOKEN_TTL_S`` seconds.
GATE_TOKEN_TTL_S = 5.0
#: Scans redeemed at once in one api process.
SCAN_THREADS = 8
#: Consume intents of answered scans wait at most this long to be sent together.
SEND_EVERY_S = 0.2
_JSON = b"application/json"


class _Declined(Exception):
    """The request is not one the fast path answers: FastAPI's route does."""


class GateTokens:
    """Bearer token → the gate it names (None for a shared gate or admin token), as
    ``routes.auth.gate_identity`` decides; a gate's own token looked up at most once per
    ``GATE_TOKEN_TTL_S``. Unknown tokens are not remembered (FastAPI's route refuses them)."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[float, GateIdentity]] = {}

    def _shared(self, token: str) -> bool:
        settings = get_settings()
        given = token.encode()
        accepted = settings.gate_tokens + settings.admin_tokens
        return any(hmac.compare_digest(given, known.get_secret_value().encode()) for known in accepted)

    async def identity(self, token: str) -> GateIdentity | None:
        if self._shared(token):
            return None
        key = token_hash(token)
        now = time.monotonic()
        remembered = self._known.get(key)
        if remembered is not None and remembered[0] > now:
            return remembered[1]
        identity = await to_thread.run_sync(_gate_of, token)
        if identity is None:
            self._known.pop(key, None)
            raise _Declined
        self._known[key] = (now + GATE_TOKEN_TTL_S, identity)
        return identity


def _gate_of(token: str) -> GateIdentity | None:
    with session_scope() as session:
        return gate_for_token(session, token)


class IntentBatches:
    """Sends committed outbox intents in batches from the event loop's side: :meth:`add` returns
    at once; within ``SEND_EVERY_S`` a worker thread sends everything added meanwhile."""

    def __init__(self) -> None:
        self._waiting: list[Intent] = []
        self._tasks: set[asyncio.Task[bool]] = set()

    def add(self, intents: Sequence[Intent]) -> None:
        if not intents:
            return
        if not self._waiting:
            asyncio.get_running_loop().call_later(SEND_EVERY_S, self._send)
        self._waiting.extend(intents)

    def _send(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(to_thread.run_sync(flush, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class ScanFastPath:
    """Pure ASGI: answers well-formed, authenticated ``POST /v1/redemptions``; everything else goes
    to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.tokens = GateTokens()
        self.batches = IntentBatches()
        self.limiter: CapacityLimiter | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != SCAN_PATH:
            await self.app(scope, receive, send)
            return
        authorization: str | None = None
        content_type: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value.partition(b";")[0].strip().lower()
        body, messages = await read_body(receive)
        token = bearer_token(authorization)
        try:
            if token is None or content_type != _JSON or messages[-1]["type"] != "http.request":
                raise _Declined
            scan = RedemptionIn.model_validate(json.loads(body))
            identity = await self.tokens.identity(token)
        except (_Declined, ValueError, ValidationError, DBAPIError):
            await self.app(scope, replaying(messages, receive), send)
            return
        if self.limiter is None:
            self.limiter = CapacityLimiter(SCAN_THREADS)
        try:
            reply = await to_thread.run_sync(reply_to_scan, scan, identity, limiter=self.limiter)
        except DBAPIError as exc:
            if not database_unreachable(exc):
                raise
            log.warning("POST %s: database unavailable: %s", SCAN_PATH, type(exc).__name__)
            await unavailable("the database")(scope, receive, send)
            return
        headers = [(b"content-type", _JSON), (b"content-length", str(len(reply.body)).encode("ascii"))]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        self.batches.add(reply.intents)
