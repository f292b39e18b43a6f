"""The benchmarks' HTTP load generator: a lean asyncio HTTP/1.1 keep-alive client on uvloop, run
as a second process so it takes as little as possible of the cores the server shares with it.

:func:`run_load` (the orchestrator's side) writes the raw requests to a file and runs this script
on them; the script sends them round-robin over the connections (spread over the server
processes' ports like a load balancer), back to back or paced at a rate, and prints one JSON line:
``{"elapsed_s", "requests", "rps", "p50_ms", "p99_ms", "statuses"}``. Only requests sent after
the warm-up are timed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line[15:])
    return 0


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending its requests back to back (or, paced, one every
    ``run.interval_s``) and timing each answer. A paced request is timed from when it was due, so
    a server falling behind is charged for the wait (no coordinated omission)."""

    def __init__(self, requests: list[bytes], run: _Run, offset_s: float) -> None:
        self._requests = requests
        self._offset_s = offset_s
        self._run = run
        self._next = 0
        self._buffer = bytearray()
        self._sent_at = 0.0
        self._first_due = 0.0
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.finished: asyncio.Future[None] = self._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP connection's transport (uvloop's is not a subclass of asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)
        self._first_due = time.perf_counter() + self._offset_s
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        now = time.perf_counter()
        if now >= self._run.stop_at or (self._run.once and self._next >= len(self._requests)):
            self._transport.close()
            if not self.finished.done():
                self.finished.set_result(None)
            return
        due = self._first_due + self._next * self._run.interval_s if self._run.interval_s else now
        if due > now:
            self._loop.call_later(due - now, self._write, due)
        else:
            self._write(due)

    def _write(self, due: float) -> None:
        assert self._transport is not None
        self._sent_at = due
        self._transport.write(self._requests[self._next % len(self._requests)])
        self._next += 1

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).lower()
        length = _content_length(head)
        if len(self._buffer) < end + 4 + length:
            return
        del self._buffer[: end + 4 + length]
        self._run.record(int(head[9:12]), self._sent_at, time.perf_counter())
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.finished.set_result(None)


@dataclass
class _Run:
    start_at: float
    stop_at: float
    #: Send each request once, then stop (the cache fill).
    once: bool = False
    #: Per connection, one request every ``interval_s`` (0: back to back).
    interval_s: float = 0.0

    def __post_init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()

    def record(self, status: int, sent_at: float, answered_at: float) -> None:
        if sent_at >= self.start_at:
            self.latencies.append(answered_at - sent_at)
            self.statuses[status] += 1


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


async def _load(
    ports: list[int], requests: list[bytes], seconds: float, connections: int, warmup_s: float, once: bool, rate: float
) -> dict[str, Any]:
    now = time.perf_counter()
    interval_s = connections / rate if rate else 0.0
    run = _Run(start_at=now + warmup_s, stop_at=now + warmup_s + seconds, once=once, interval_s=interval_s)
    loop = asyncio.get_running_loop()
    conns = []
    for index in range(min(connections, len(requests)) if once else connections):
        share = requests[index::connections] or requests
        offset_s = index * interval_s / connections  # paced connections take turns, not bursts

        def connection(share: list[bytes] = share, offset_s: float = offset_s) -> _Connection:
            return _Connection(share, run, offset_s)

        _, protocol = await loop.create_connection(connection, "127.0.0.1", ports[index % len(ports)])
        conns.append(protocol)
    await asyncio.gather(*(c.finished for c in conns))
    latencies = sorted(run.latencies)
    return {
        "elapsed_s": time.perf_counter() - now,
        "requests": len(latencies),
        "rps": len(latencies) / seconds,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "statuses": {str(k): v for k, v in sorted(run.statuses.items())},
    }


def main(args: argparse.Namespace) -> None:
    import uvloop

    requests = [
        line.encode("latin-1").replace(b"\\r\\n", b"\r\n") for line in Path(args.requests).read_text().splitlines()
    ]
    ports = [int(port) for port in args.ports.split(",")]
    result = uvloop.run(_load(ports, requests, args.seconds, args.connections, args.warmup, args.once, args.rate))
    print(json.dumps(result))


def request_line(path: str, token: str | None = None) -> str:
    auth = f"Authorization: Bearer {token}\\r\\n" if token else ""
    return f"GET {path} HTTP/1.1\\r\\nHost: bench\\r\\n{auth}\\r\\n"


def run_load(
    ports: list[int],
    lines: list[str],
    seconds: float,
    connections: int,
    warmup_s: float,
    *,
    once: bool = False,
    rate: float = 0.0,
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".requests", delete=False) as handle:
        handle.write("\n".join(lines))
    try:
        command = [sys.executable, __file__, "--ports", ",".join(map(str, ports)), "--requests", handle.name]
        command += ["--seconds", str(seconds), "--connections", str(connections), "--warmup", str(warmup_s)]
        command += ["--once"] if once else []
        command += ["--rate", str(rate)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        return dict(json.loads(output.strip().splitlines()[-1]))
    finally:
        os.unlink(handle.name)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ports", required=True)
    parser.add_argument("--requests", required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--rate", type=float, default=0.0)
    return parser.parse_args()


if __name__ == "__main__":
    main(parse_args())
