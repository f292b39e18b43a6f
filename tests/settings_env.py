"""Changing settings inside a test: through the environment, so subprocesses see it too, then
rebuilding the cached settings and the per-process clients built from them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from cardpipe import runtime
from cardpipe.settings import get_settings


def rebuild_settings() -> None:
    get_settings.cache_clear()
    runtime.reset()


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set these environment variables for the block; restore them afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    rebuild_settings()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        rebuild_settings()
