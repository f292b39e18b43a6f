"""What a gate's scan may hold, field by field: one set of rules for every way a scan arrives
(``POST /v1/redemptions``'s body, ``cardpipe redeem``'s arguments).

A value these rules accept is safe to store as it is: every text field is printable ASCII within
its column's length (no NUL, no control characters), and a gate name cannot contain ``:``, which
marks WeChat's own consumes (``wechat:…``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from models import Direction

#: Ids are PostgreSQL BIGINTs: anything larger names nothing (and must not reach the database).
_MAX_ID = 2**63 - 1


class ScanFields(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    code: str = Field(min_length=1, max_length=32, pattern=r"^[\x21-\x7e]+$", description="The scanned code")
    gate: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[^:\x00-\x1f]+$",
        description="Which gate scanned it (no ':': gates named wechat:… are WeChat's own consumes); "
        "required with a shared gate token, implied by a gate's own token",
    )
    nonce: str = Field(
        min_length=8,
        max_length=64,
        pattern=r"^[0-9A-Za-z_-]+$",
        description="One per scan, chosen by the gate (a UUID): a retry with the same nonce gets the same answer",
    )
    card_id: str | None = Field(default=None, min_length=1, max_length=32, pattern=r"^[0-9A-Za-z_-]+$")
    event_id: int | None = Field(default=None, ge=1, le=_MAX_ID, description="The gate's event, if it knows it")
    direction: Direction = Field(default=Direction.ENTRY, description="entry (default) or exit")
