"""Official accounts, the mini programs bound to them, and their WeChat credentials."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from cardpipe import clock
from models.base import Base, BigId, EncryptedText, UTCDateTime


class OfficialAccount(Base):
    """An OA with the card feature. Cards, tokens and api_tickets all live in its namespace."""

    __tablename__ = "official_accounts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    appid: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    #: The ``gh_…`` original id: ToUserName of every push.
    original_id: Mapped[str | None] = mapped_column(String(64))
    app_secret: Mapped[str] = mapped_column(EncryptedText)
    server_token: Mapped[str] = mapped_column(EncryptedText)
    encoding_aes_key: Mapped[str | None] = mapped_column(EncryptedText)
    #: The server URL is in safe mode at WeChat: plain pushes (whose signature does not cover
    #: the body) are refused; only ``Encrypt`` with a valid ``msg_signature`` is accepted.
    safe_mode: Mapped[bool] = mapped_column(default=False, server_default=false())
    use_stable_token: Mapped[bool] = mapped_column(default=True)
    #: Set when WeChat answered 45009: outbound work for this account waits until then.
    quota_blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    quota_reason: Mapped[str | None] = mapped_column(Text)
    #: WeChat refused the account's configuration (wrong secret, IP not whitelisted, unknown
    #: appid): credential work waits until ``config_retry_at`` and backs off on each failure.
    config_error: Mapped[str | None] = mapped_column(Text)
    config_error_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    config_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    config_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)


class MiniProgram(Base):
    """A Mini Program bound to an OA; its secret is only used for jscode2session."""

    __tablename__ = "mini_programs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    appid: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    app_secret: Mapped[str] = mapped_column(EncryptedText)
    official_account_id: Mapped[int] = mapped_column(ForeignKey("official_accounts.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)


class CredentialKind(StrEnum):
    ACCESS_TOKEN = "access_token"
    CARD_TICKET = "card_ticket"


class Credential(Base):
    """The current access_token or wx_card api_ticket of an OA. ``version`` only ever grows:
    for the card ticket it is the version recorded on every ticket signed with it."""

    __tablename__ = "credentials"
    __table_args__ = (UniqueConstraint("official_account_id", "kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    official_account_id: Mapped[int] = mapped_column(ForeignKey("official_accounts.id"))
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(EncryptedText)
    version: Mapped[int] = mapped_column(Integer, default=1)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    #: When the value last changed (a fetch may bring back the same value).
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
