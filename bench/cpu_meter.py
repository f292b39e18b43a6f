"""CPU seconds per process group, read from ``/proc`` (psutil) while a benchmark runs: each group
is a set of root processes and all their children."""

from __future__ import annotations

import threading
from collections.abc import Callable

import psutil


class CpuMeter:
    """CPU seconds (user + system) per process group, sampled from ``/proc`` twice a second so a
    process that exits mid-run keeps what it had spent."""

    def __init__(self, groups: dict[str, list[int]], database_pids: Callable[[], list[int]]) -> None:
        self._groups = groups
        self._database_pids = database_pids
        self._seen: dict[int, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _pids(self) -> dict[int, str]:
        pids: dict[int, str] = {}
        for group, roots in self._groups.items():
            for root in roots:
                try:
                    process = psutil.Process(root)
                    pids[root] = group
                    for child in process.children(recursive=True):
                        pids[child.pid] = group
                except psutil.NoSuchProcess:
                    continue
        for pid in self._database_pids():
            pids[pid] = "postgres"
        return pids

    def sample(self) -> None:
        for pid, group in self._pids().items():
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.NoSuchProcess:
                continue
            with self._lock:
                self._seen[pid] = (group, times.user + times.system)

    def totals(self) -> dict[int, tuple[str, float]]:
        self.sample()
        with self._lock:
            return dict(self._seen)

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self.sample()

    def start(self) -> CpuMeter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def spent(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per group between two totals (a process new since ``before`` counts whole)."""
    groups: dict[str, float] = {}
    for pid, (group, seconds) in after.items():
        groups[group] = groups.get(group, 0.0) + seconds - before.get(pid, (group, 0.0))[1]
    return groups
