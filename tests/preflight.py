"""Run by ``make test`` before pytest: says which test service is unreachable and how to start it.

Outside CI the suite still runs and skips what needs the missing service; with ``CI=true``
nothing may be skipped, so a missing service stops the run here.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.backing_services import HOW_TO_START, in_ci, problems


def main() -> int:
    missing = problems()
    for name, problem in missing.items():
        print(f"test preflight: {name} is unreachable ({problem}).", file=sys.stderr)
        print(f"  start it with: {HOW_TO_START[name]}", file=sys.stderr)
    if missing and in_ci():
        print("test preflight: CI=true, so nothing may be skipped; stopping.", file=sys.stderr)
        return 1
    if missing:
        print("test preflight: tests that need it will be skipped.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
