"""A gate's scan and the answer it gets: what ``services.redemptions`` takes and gives back.

An answer is the scan's verdict as recorded: ``replayed`` answers repeat the stored verdict of the
nonce's first scan and change nothing; only an admitted single-use entry consumes the ticket
(``consumes``), and only a fresh one queues the WeChat consume (``queue_consume``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from models import Direction, RedemptionResult


@dataclass(frozen=True, slots=True)
class Scan:
    code: str
    gate: str
    nonce: str
    card_id: str | None = None
    event_id: int | None = None
    direction: Direction = Direction.ENTRY
    #: The gate's list when the gate scans under its own token (its event is then ``event_id``).
    list_id: int | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    redemption_id: int
    result: RedemptionResult
    code: str
    gate: str
    nonce: str
    ticket_id: int | None
    event_id: int | None
    answered_at: datetime
    #: ``ok``: this scan; ``already_redeemed``: when the ticket was let in, and by which gate.
    redeemed_at: datetime | None
    redeemed_gate: str | None
    replayed: bool
    direction: Direction = Direction.ENTRY
    list_id: int | None = None
    single_use: bool = True

    @property
    def ok(self) -> bool:
        return self.result == RedemptionResult.OK

    @property
    def consumes(self) -> bool:
        """An admitted single-use entry: the ticket's WeChat card is consumed."""
        return self.ok and self.single_use and self.direction == Direction.ENTRY

    @property
    def queue_consume(self) -> bool:
        return self.consumes and not self.replayed

    def message(self) -> str:
        if self.ok and self.direction == Direction.EXIT:
            return "goodbye"
        if self.result == RedemptionResult.ALREADY_REDEEMED and self.redeemed_at:
            return f"already redeemed at {self.redeemed_at.isoformat()} by gate {self.redeemed_gate or '?'}"
        return _MESSAGES[self.result]


_MESSAGES = {
    RedemptionResult.OK: "welcome",
    RedemptionResult.INVALID: "no such ticket code",
    RedemptionResult.NOT_CLAIMED: "ticket not claimed into WeChat yet",
    RedemptionResult.ALREADY_REDEEMED: "already redeemed",
    RedemptionResult.REVOKED: "ticket revoked",
    RedemptionResult.DELETED: "ticket deleted from WeChat by its holder",
    RedemptionResult.WRONG_EVENT: "ticket of another event",
    RedemptionResult.OUTSIDE_WINDOW: "outside the list's admission hours",
    RedemptionResult.LIMIT_REACHED: "the ticket has used all its entries",
    RedemptionResult.DAY_LIMIT_REACHED: "the ticket has used all its entries for today",
    RedemptionResult.ALREADY_INSIDE: "the ticket is inside: it must exit before entering again",
    RedemptionResult.NOT_INSIDE: "the ticket is not inside",
    RedemptionResult.CAPACITY_FULL: "the venue is full: wait until someone exits",
    RedemptionResult.NOT_ON_LIST: "the list does not admit this ticket's class",
}
