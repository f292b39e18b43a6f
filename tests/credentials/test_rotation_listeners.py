"""Every process that can rotate a card api_ticket carries the bulk re-sign listener: the api, the
scheduler, the CLI (``credentials refresh``) and the workers each import ``workers.resign``,
which registers it in :mod:`cardpipe.rotation`; the core alone registers nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cardpipe import rotation

_LISTENERS = "from cardpipe import rotation; print(','.join(f.__qualname__ for f in rotation.listeners()))"


@pytest.mark.parametrize("entry_point", ["api", "scheduler", "cardpipe.cli", "workers"])
def test_each_entry_point_registers_the_re_sign_once(entry_point: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", f"import {entry_point}; {_LISTENERS}"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "_resign_after_rotation"


def test_the_core_alone_registers_no_listener() -> None:
    out = subprocess.run(
        [sys.executable, "-c", f"import cardpipe.runtime, cardpipe.services.resign; {_LISTENERS}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == ""


def test_listeners_run_in_order_and_register_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rotation, "_listeners", [])
    heard: list[tuple[str, str, int]] = []

    def first(appid: str, version: int) -> None:
        heard.append(("first", appid, version))

    def second(appid: str, version: int) -> None:
        heard.append(("second", appid, version))

    for listener in (first, second, first):
        rotation.on_ticket_rotated(listener)
    assert rotation.listeners() == (first, second)
    rotation.notify_ticket_rotated("wxappid", 7)
    assert heard == [("first", "wxappid", 7), ("second", "wxappid", 7)]
