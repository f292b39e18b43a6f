"""The database schema: SQLAlchemy 2 typed models. Import from here."""

from models.accounts import Credential, CredentialKind, MiniProgram, OfficialAccount
from models.base import Base
from models.event import CodeMode, Event
from models.inbox import InboxItem, InboxSource
from models.redemptions import ConsumeSync, Redemption, RedemptionResult
from models.tickets import Order, Ticket, TicketState

__all__ = [
    "Base",
    "CodeMode",
    "ConsumeSync",
    "Credential",
    "CredentialKind",
    "Event",
    "InboxItem",
    "InboxSource",
    "MiniProgram",
    "OfficialAccount",
    "Order",
    "Redemption",
    "RedemptionResult",
    "Ticket",
    "TicketState",
]
