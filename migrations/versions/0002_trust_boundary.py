"""trust boundary: safe-mode flag and configuration-error backoff on official accounts; the
push replay guard's (timestamp, nonce) table

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 15:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMNs (no batch rebuild): on SQLite a rebuild drops the table that
    # mini_programs and events point at, which foreign keys forbid once rows exist.
    op.add_column("official_accounts", sa.Column("safe_mode", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("official_accounts", sa.Column("config_error", sa.Text(), nullable=True))
    op.add_column("official_accounts", sa.Column("config_error_since", sa.DateTime(timezone=True), nullable=True))
    op.add_column("official_accounts", sa.Column("config_retry_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("official_accounts", sa.Column("config_failures", sa.Integer(), server_default="0", nullable=False))
    op.create_table(
        "push_nonces",
        sa.Column("official_account_id", BigId, nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["official_account_id"],
            ["official_accounts.id"],
            name=op.f("fk_push_nonces_official_account_id_official_accounts"),
        ),
        sa.PrimaryKeyConstraint("official_account_id", "timestamp", "nonce", name=op.f("pk_push_nonces")),
    )
    op.create_index(op.f("ix_push_nonces_received_at"), "push_nonces", ["received_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_push_nonces_received_at"), table_name="push_nonces")
    op.drop_table("push_nonces")
    with op.batch_alter_table("official_accounts") as batch:
        for column in ("config_failures", "config_retry_at", "config_error_since", "config_error", "safe_mode"):
            batch.drop_column(column)
