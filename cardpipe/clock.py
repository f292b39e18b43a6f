"""The one source of "now": a timezone-aware UTC datetime.

Every timestamp the service writes or compares comes from here, so it is always aware and always UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)
