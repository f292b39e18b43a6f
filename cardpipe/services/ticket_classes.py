"""Ticket classes: an order's optional label (``vip``, ``standard``…) that check-in lists may
admit by. One rule for a class name wherever one comes in (order import, list settings): 1–32
printable characters without surrounding spaces; names compare exactly."""

from __future__ import annotations

from collections.abc import Iterable

MAX_CLASS_LENGTH = 32
#: A list names at most this many classes.
MAX_CLASSES_PER_LIST = 64


def check_class(value: object) -> str:
    """``value`` as a class name, or ValueError with the reason."""
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= MAX_CLASS_LENGTH
        or not value.isprintable()
        or value != value.strip()
    ):
        raise ValueError(
            f"ticket_class must be 1–{MAX_CLASS_LENGTH} printable characters without surrounding spaces, or empty"
        )
    return value


def check_classes(values: Iterable[object]) -> list[str]:
    """A list's admitted classes, sorted and without repeats, or ValueError with the reason."""
    names = sorted({check_class(value) for value in values})
    if not names:
        raise ValueError("ticket_classes must name at least one class (or be absent: every ticket)")
    if len(names) > MAX_CLASSES_PER_LIST:
        raise ValueError(f"ticket_classes names at most {MAX_CLASSES_PER_LIST} classes")
    return names
