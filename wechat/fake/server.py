"""Running the fake: in the foreground for the CLI, or in a background thread for tests."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn

from wechat.fake.app import create_app
from wechat.fake.clock import OffsetClock
from wechat.fake.control import PREFIX
from wechat.fake.parts import FakeParts
from wechat.fake.state import FakeConfig

STARTUP_TIMEOUT_S = 10.0


#: Idle keep-alive connections stay open this long (uvicorn's default is 5 s). Clients pool
#: connections; a server that drops them sooner makes an idle client's next POST meet a reset,
#: which the platform itself does not do.
KEEP_ALIVE_S = 75


class FakeWeChatServer:
    """The fake on ``host:port`` (port 0 = a free one) in a daemon thread. Use as a context
    manager; ``url`` is the base URL to give the client (``wechat_api_base``) and the control
    client; ``parts`` holds the platform state, pusher, fault knobs and statistics in-process."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        config: FakeConfig | None = None,
        clock: OffsetClock | None = None,
        push_timeout_s: float = 5.0,
        push_tries: int = 3,
        push_retry_delay_s: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.parts = FakeParts.build(
            config,
            clock=clock,
            push_timeout_s=push_timeout_s,
            push_tries=push_tries,
            push_retry_delay_s=push_retry_delay_s,
            seed=seed,
        )
        self._host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    def start(self) -> FakeWeChatServer:
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP,
        # and without it every keep-alive request waits ~40 ms for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.parts),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="asyncio",
            http="h11",
            ws="none",
            timeout_graceful_shutdown=1,
            timeout_keep_alive=KEEP_ALIVE_S,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-wechat", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError("the fake WeChat server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=5)
        self.parts.pusher.close()

    def __enter__(self) -> FakeWeChatServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve_foreground(
    host: str,
    port: int,
    *,
    config: FakeConfig | None = None,
    push_timeout_s: float = 5.0,
    seed: int | None = None,
) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM)."""
    parts = FakeParts.build(config, push_timeout_s=push_timeout_s, seed=seed)
    print(f"fake api.weixin.qq.com on http://{host}:{port} (control API under {PREFIX}/)", flush=True)
    try:
        uvicorn.run(
            create_app(parts),
            host=host,
            port=port,
            log_level="info",
            access_log=False,
            timeout_keep_alive=KEEP_ALIVE_S,
        )
    finally:
        parts.pusher.close()
