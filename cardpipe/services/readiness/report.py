"""What a readiness check reports: items, each ok / warning / failing, grouped in sections."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from cardpipe import clock


class Status(StrEnum):
    OK = "ok"
    #: Works, but something deserves a look before launch.
    WARNING = "warning"
    #: Users would fail: fix it before launch.
    FAILING = "failing"


class Section(StrEnum):
    OFFICIAL_ACCOUNT = "Official account"
    MINI_PROGRAM = "Mini Program"
    SERVER_URL = "Server URL"
    CARD = "Card"
    PREISSUE = "Pre-issue"
    SYSTEM = "Running system"


@dataclass(frozen=True, slots=True)
class Item:
    """One check. ``key`` is stable (``oa.credentials``, ``card.get_limit``…); ``checked`` says
    what was looked at, ``detail`` what was found, ``remedy`` what to do (None when ok)."""

    key: str
    section: Section
    title: str
    status: Status
    checked: str
    detail: str
    remedy: str | None = None


def ok(key: str, section: Section, title: str, checked: str, detail: str) -> Item:
    return Item(key, section, title, Status.OK, checked, detail)


def warning(key: str, section: Section, title: str, checked: str, detail: str, remedy: str) -> Item:
    return Item(key, section, title, Status.WARNING, checked, detail, remedy)


def failing(key: str, section: Section, title: str, checked: str, detail: str, remedy: str) -> Item:
    return Item(key, section, title, Status.FAILING, checked, detail, remedy)


@dataclass
class Report:
    """The items of one official account or one event. Ready = nothing failing."""

    scope: str
    items: list[Item] = field(default_factory=list)
    checked_at: datetime = field(default_factory=lambda: clock.now())

    @property
    def ready(self) -> bool:
        return not any(item.status == Status.FAILING for item in self.items)

    def item(self, key: str) -> Item:
        return next(item for item in self.items if item.key == key)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "ready": self.ready,
            "checked_at": self.checked_at.isoformat(),
            "counts": {status.value: sum(i.status == status for i in self.items) for status in Status},
            "items": [
                {**asdict(item), "section": item.section.value, "status": item.status.value} for item in self.items
            ],
        }
