"""ops history: when WeChat confirmed a ticket, when a credential last rotated, the card
stock the planner left, and the indexes the per-minute sampler counts with

Revision ID: 0006
Revises: 0001
Create Date: 2026-11-29 15:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tickets", sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("credentials", sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("events", sa.Column("wechat_stock", sa.Integer(), nullable=True))
    op.add_column("events", sa.Column("wechat_stock_received", sa.Integer(), nullable=True))
    op.add_column("events", sa.Column("wechat_stock_at", sa.DateTime(timezone=True), nullable=True))
    # Partial: pre-issue inserts tickets with both NULL, so the bulk path never touches them.
    op.create_index(
        "ix_tickets_claimed_at",
        "tickets",
        ["claimed_at"],
        postgresql_where=sa.text("claimed_at IS NOT NULL"),
        sqlite_where=sa.text("claimed_at IS NOT NULL"),
    )
    op.create_index(
        "ix_tickets_confirmed_at",
        "tickets",
        ["confirmed_at"],
        postgresql_where=sa.text("confirmed_at IS NOT NULL"),
        sqlite_where=sa.text("confirmed_at IS NOT NULL"),
    )
    op.create_index("ix_redemptions_created_at", "redemptions", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_redemptions_created_at", table_name="redemptions")
    op.drop_index("ix_tickets_confirmed_at", table_name="tickets")
    op.drop_index("ix_tickets_claimed_at", table_name="tickets")
    op.drop_column("events", "wechat_stock_at")
    op.drop_column("events", "wechat_stock_received")
    op.drop_column("events", "wechat_stock")
    op.drop_column("credentials", "rotated_at")
    op.drop_column("tickets", "confirmed_at")
