"""The database schema: SQLAlchemy 2 typed models. Import from here."""

from models.accounts import Credential, CredentialKind, MiniProgram, OfficialAccount
from models.base import Base
from models.event import CodeMode, Event, EventState
from models.inbox import InboxItem, InboxSource
from models.outbox import OutboxMessage
from models.redemptions import ConsumeSync, Redemption, RedemptionResult, Revocation
from models.tickets import Order, Ticket, TicketState

__all__ = [
    "Base",
    "CodeMode",
    "ConsumeSync",
    "Credential",
    "CredentialKind",
    "Event",
    "EventState",
    "InboxItem",
    "InboxSource",
    "MiniProgram",
    "OfficialAccount",
    "Order",
    "OutboxMessage",
    "Redemption",
    "RedemptionResult",
    "Revocation",
    "Ticket",
    "TicketState",
]
