"""The launch fast paths' blocking calls, handed to a thread pool of their own.

anyio's ``to_thread.run_sync`` — what FastAPI runs a plain route with — costs the event loop
about twice the CPU of ``loop.run_in_executor`` on a ``ThreadPoolExecutor`` for each hand-off (a
capacity limiter, a cancel scope and a Python queue per call; 72 against 32 µs measured on the
same machine), and a launch makes several per ticket. The fast paths of a launch (login, claim,
result, push) therefore hand their database work to :func:`run_blocking`: ``api_threads`` threads per
process (the anyio limiter of the plain routes is set to the same number), so the connection
pool's size still bounds what one process holds of PostgreSQL. The gates' scans keep their own
limit (``scan_fast_path.SCAN_THREADS``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import TypeVar, TypeVarTuple, Unpack

from cardpipe.settings import get_settings

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

#: Threads of the pool when ``api_threads`` is not set (``cardpipe api`` sets it).
DEFAULT_THREADS = 16


def api_threads() -> int:
    return get_settings().api_threads or DEFAULT_THREADS


@lru_cache(maxsize=1)
def _calls() -> ThreadPoolExecutor:
    """The process's pool, started on first use and shared by every event loop (tests run several)."""
    return ThreadPoolExecutor(api_threads(), thread_name_prefix="cardpipe-call")


async def run_blocking(call: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
    """``call(*args)`` in one of the pool's threads."""
    return await asyncio.get_running_loop().run_in_executor(_calls(), call, *args)
