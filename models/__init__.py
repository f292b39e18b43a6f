"""The database schema: SQLAlchemy 2 typed models. Import from here."""

from models.accounts import Credential, CredentialKind, MiniProgram, OfficialAccount
from models.base import Base
from models.checkin import CheckinList, Direction, Gate, ListPolicy, Presence
from models.event import CodeMode, Event, EventState
from models.inbox import InboxItem, InboxSource, PushNonce
from models.outbox import OutboxMessage
from models.redemptions import ConsumeSync, Redemption, RedemptionResult, Revocation
from models.tickets import CLAIMABLE_STATES, RECEIVED_STATES, Order, Ticket, TicketState

__all__ = [
    "CLAIMABLE_STATES",
    "RECEIVED_STATES",
    "Base",
    "CheckinList",
    "CodeMode",
    "ConsumeSync",
    "Credential",
    "CredentialKind",
    "Direction",
    "Event",
    "EventState",
    "Gate",
    "InboxItem",
    "InboxSource",
    "ListPolicy",
    "MiniProgram",
    "OfficialAccount",
    "Order",
    "OutboxMessage",
    "Presence",
    "PushNonce",
    "Redemption",
    "RedemptionResult",
    "Revocation",
    "Ticket",
    "TicketState",
]
