"""Parts for outage tests and ``bench/outage.py``: a Redis server of our own that can be killed
and restarted (empty, or from its append-only file), a TCP proxy in front of PostgreSQL that can
cut every connection and refuse new ones for a while (a database restart as the app sees it,
without touching the shared server), and the app's processes (api, worker, scheduler) started as
subprocesses on them."""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """``redis-server`` on a free port with its own directory. ``kill`` is SIGKILL (no shutdown
    save); ``start(empty=True)`` removes what it had written first."""

    def __init__(self, directory: Path, *, appendonly: bool) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, empty: bool = False) -> None:
        if empty:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        log = (self.directory.parent / f"redis-{self.port}.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``. ``cut`` drops every connection and refuses new
    ones until ``resume``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="tcp-proxy")

    def __enter__(self) -> TcpProxy:
        self.resume()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self.cut()

    def _listen(self) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(0.1)
        return listener

    def resume(self) -> None:
        with self._lock:
            if self._listener is None:
                self._listener = self._listen()

    def cut(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            with self._lock:
                listener = self._listener
            if listener is None:
                time.sleep(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        client.setblocking(False)
        upstream.setblocking(False)
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        try:
            while True:
                for key, _ in selector.select(timeout=1):
                    data = (client if key.fileobj is client else upstream).recv(65536)
                    if not data:
                        return
                    key.data.setblocking(True)
                    key.data.sendall(data)
                    key.data.setblocking(False)
        except (OSError, ValueError):
            return
        finally:
            selector.close()
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()


class AppProcesses:
    """The app's processes on a given Redis and database: ``cardpipe api``, ``cardpipe worker``,
    ``cardpipe scheduler``, each logging to a file in ``log_dir``."""

    def __init__(self, log_dir: Path, *, redis_url: str, database_url: str, **settings: str) -> None:
        self.log_dir = log_dir
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "CARDPIPE_BROKER_HEARTBEAT_TIMEOUT_MS": "3000",
            "CARDPIPE_BROKER_MAINTENANCE_CHANCE": "1000000",
            **settings,
        }
        self.api_port = free_port()
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "cardpipe", *args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_api(self) -> subprocess.Popen[bytes]:
        process = self._start("api", "api", "--port", str(self.api_port))
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.api_url}/healthz", timeout=1).status_code == 200:
                    return process
            assert process.poll() is None and time.monotonic() < deadline, self.log("api")
            time.sleep(0.1)

    def start_worker(self, *, processes: int = 1, threads: int = 4) -> subprocess.Popen[bytes]:
        process = self._start("worker", "worker", "-p", str(processes), "-t", str(threads), "--shutdown-timeout-s", "5")
        deadline = time.monotonic() + 60
        while self.log("worker").count("ready for action") < processes:
            assert process.poll() is None and time.monotonic() < deadline, self.log("worker")
            time.sleep(0.1)
        return process

    def start_scheduler(self) -> subprocess.Popen[bytes]:
        return self._start("scheduler", "scheduler")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
