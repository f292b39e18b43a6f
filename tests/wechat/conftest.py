"""Fixtures for the WeChat client and fake tests.

One fake server runs for the whole session (``fake_server`` in ``tests/conftest.py``); each test
gets its own official account, mini program and person (``world`` / ``make_world``) so tests do
not see each other's tokens, tickets, cards or pushes. ``receiver`` is a recording HTTP server
standing in for the OA's server URL.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.worlds import MakeWorld, World


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    body: str


@dataclass
class PushReceiver:
    """A stand-in OA server. ``delay_s`` holds each answer (the first ``slow_first`` answers
    only, when set); ``status`` and ``reply`` shape the answer; a URL check gets its ``echostr``."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    delay_s: float = 0.0
    slow_first: int | None = None
    status: int = 200
    reply: Callable[[Received], str] = lambda request: "success"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, request: Received) -> tuple[float, int, str]:
        with self.lock:
            self.received.append(request)
            index = len(self.received)
        slow = self.slow_first is None or index <= self.slow_first
        delay = self.delay_s if slow else 0.0
        if request.method == "GET" and "echostr" in request.query:
            return delay, self.status, request.query["echostr"]
        return delay, self.status, self.reply(request)

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"expected {count} requests, got {len(self.received)}")
            time.sleep(0.01)
        return list(self.received)


def _handler(receiver: PushReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8") if length else ""
            request = Received(self.command, parts.path, dict(parse_qsl(parts.query)), body)
            delay, status, text = receiver.record(request)
            if delay:
                time.sleep(delay)
            payload = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _serve
        do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # the fake hung up on a slow answer: expected in retry tests


@pytest.fixture
def receiver() -> Iterator[PushReceiver]:
    state = PushReceiver()
    server = _QuietServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}/wechat/callback"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    """A URL nothing listens on (connection refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/callback"


@pytest.fixture
def world(make_world: MakeWorld, receiver: PushReceiver) -> World:
    return make_world(push_url=receiver.url)
