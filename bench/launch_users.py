"""The launch benchmark's load generator: Mini Program users, run in a process of their own.

Each user arrives at its scheduled time and does what the Mini Program does at a launch:
``wx.login`` (at the fake), ``POST /v1/sessions``, ``POST /v1/claims`` for all of its orders
(again after ``retry_after_ms`` while some order is pending), ``wx.addCard`` at the fake (which
then pushes ``user_get_card`` to the api as WeChat does), ``POST /v1/claims/result``.

Lean on purpose, like ``bench/poll.py``'s generator: asyncio on uvloop, a pool of keep-alive
HTTP/1.1 connections per server, no HTTP library in the hot loop, so the generator takes as
little as possible of the cores it shares with the servers it measures. A request's latency is
timed from when it was sent; a user's arrival is timed from when it was due (a generator falling
behind shows up as late arrivals, printed).

Input (``--plan``): JSON ``{"api_port", "fake_port", "mp_appid", "users": [[person, [order_no…]]…],
"rate"}`` (users per second; 0 = all at once, bounded by ``--concurrency``), or
``"healthz": N`` for N ``GET /healthz`` (the baseline). Output: one JSON line
with latency percentiles per request kind, each order's ``wx.addCard`` wall-clock time, errors.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter, defaultdict
from typing import Any

#: Claim attempts per user before it is counted as given up.
CLAIM_ATTEMPTS = 30


class Pool:
    """Keep-alive HTTP/1.1 connections to one server, handed out one request at a time."""

    def __init__(self, port: int, size: int) -> None:
        self._port = port
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = asyncio.Queue()
        for _ in range(size):
            self._idle.put_nowait(None)

    async def request(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        """One request; a pooled connection the server closed while idle (uvicorn keeps them 5 s)
        is replaced and the request sent again on the new one."""
        conn = await self._idle.get()
        try:
            for fresh in (conn is None, True):
                if fresh:
                    conn = await asyncio.open_connection("127.0.0.1", self._port)
                assert conn is not None
                answer = await self._exchange(conn, method, path, body, token)
                if answer is not None:
                    status, content, closing = answer
                    if closing:
                        conn[1].close()
                        conn = None
                    return status, json.loads(content) if content else None
                conn[1].close()
            raise ConnectionError(f"{method} {path}: the server closed a fresh connection")
        except (OSError, asyncio.IncompleteReadError, ValueError):
            conn = None
            raise
        finally:
            self._idle.put_nowait(conn)

    @staticmethod
    async def _exchange(
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], method: str, path: str, body: Any, token: str | None
    ) -> tuple[int, bytes, bool] | None:
        """Status, body and whether the server closes; None if the connection was already closed."""
        reader, writer = conn
        payload = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        head += f"Authorization: Bearer {token}\r\n" if token else ""
        try:
            writer.write(f"{head}Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
            status_line = await reader.readline()
        except ConnectionError:
            return None
        if not status_line:
            return None
        length, closing = 0, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                closing = True
        content = await reader.readexactly(length) if length else b""
        return int(status_line[9:12]), content, closing


class Users:
    def __init__(self, plan: dict[str, Any], concurrency: int) -> None:
        self.api = Pool(plan["api_port"], concurrency)
        self.fake = Pool(plan["fake_port"], concurrency)
        self.mp_appid = plan["mp_appid"]
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.added_at: dict[str, float] = {}
        self.late_s: list[float] = []

    async def call(self, kind: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        started = time.perf_counter()
        status, answer = await self.api.request(method, path, body, token)
        self.latencies[kind].append(time.perf_counter() - started)
        self.statuses[f"{kind} {status}"] += 1
        if status >= 400:
            raise RuntimeError(f"{kind} answered {status}: {str(answer)[:200]}")
        return answer

    async def user(self, person: str, order_nos: list[str]) -> None:
        try:
            who = {"person": person, "mp_appid": self.mp_appid}
            _, login = await self.fake.request("POST", "/__fake__/login", who)
            login_body = {"code": login["code"], "appid": self.mp_appid}
            session = await self.call("session", "POST", "/v1/sessions", login_body)
            token = session["token"]
            for _ in range(CLAIM_ATTEMPTS):
                claim = await self.call("claims", "POST", "/v1/claims", {"order_nos": order_nos}, token)
                if claim["status"] == "done":
                    return
                if claim["status"] == "pending":
                    await asyncio.sleep(claim["retry_after_ms"] / 1000)
                    continue
                body = {"person": person, "mp_appid": self.mp_appid, "cardList": claim["cardList"]}
                _, added = await self.fake.request("POST", "/__fake__/addcard", body)
                ok = added["errMsg"] == "addCard:ok"
                if ok:
                    now = time.time()
                    for order_no in order_nos:
                        self.added_at[order_no] = now
                result = {
                    "order_nos": order_nos,
                    "errMsg": added["errMsg"],
                    "cardList": added["cardList"] if ok else claim["cardList"],
                }
                await self.call("result", "POST", "/v1/claims/result", result, token)
                if ok:
                    return
                self.errors[f"addCard {added['errMsg']}"] += 1
            self.errors["gave up"] += 1
        except Exception as exc:  # every failure is counted; none stops the other users
            self.errors[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1

    async def run(self, users: list[tuple[str, list[str]]], rate: float, concurrency: int) -> float:
        started = time.perf_counter()
        if not rate:
            gate = asyncio.Semaphore(concurrency)

            async def bounded(person: str, order_nos: list[str]) -> None:
                async with gate:
                    await self.user(person, order_nos)

            await asyncio.gather(*(bounded(person, orders) for person, orders in users))
            return time.perf_counter() - started
        tasks = []
        for index, (person, orders) in enumerate(users):
            due = started + index / rate
            if (wait := due - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            self.late_s.append(max(0.0, time.perf_counter() - due))
            tasks.append(asyncio.create_task(self.user(person, orders)))
        await asyncio.gather(*tasks)
        return time.perf_counter() - started


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan")}

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000, 2)

    return {"n": len(ordered), "p50_ms": at(0.50), "p99_ms": at(0.99)}


async def _healthz(users: Users, count: int, concurrency: int) -> None:
    """The baseline: ``count`` trivial requests over the same pool."""

    async def one_connection(share: int) -> None:
        for _ in range(share):
            await users.call("healthz", "GET", "/healthz")

    await asyncio.gather(*(one_connection(count // concurrency) for _ in range(concurrency)))


async def _main(plan: dict[str, Any], concurrency: int) -> dict[str, Any]:
    users = Users(plan, concurrency)
    if plan.get("healthz"):
        await _healthz(users, plan["healthz"], concurrency)
    elapsed = await users.run([(p, list(o)) for p, o in plan["users"]], plan["rate"], concurrency)
    return {
        "elapsed_s": elapsed,
        "requests": {kind: _percentiles(values) for kind, values in users.latencies.items()},
        "statuses": dict(users.statuses),
        "errors": dict(users.errors),
        "added_at": users.added_at,
        "late_p99_ms": _percentiles(users.late_s)["p99_ms"] if users.late_s else 0.0,
    }


def run(plan_path: str, concurrency: int) -> None:
    import uvloop

    with open(plan_path) as handle:
        plan = json.load(handle)
    figures = uvloop.run(_main(plan, concurrency))
    # The event loop may leave stdout non-blocking: a long line to the pipe would be cut short.
    os.set_blocking(sys.stdout.fileno(), True)
    print(json.dumps(figures))
