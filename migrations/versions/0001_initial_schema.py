"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-20 23:52:08.840202
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

#: 64-bit ids on PostgreSQL; SQLite only autoincrements an INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "official_accounts",
        sa.Column("id", BigId, nullable=False),
        sa.Column("appid", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("original_id", sa.String(length=64), nullable=True),
        sa.Column("app_secret", sa.Text(), nullable=False),
        sa.Column("server_token", sa.Text(), nullable=False),
        sa.Column("encoding_aes_key", sa.Text(), nullable=True),
        sa.Column("use_stable_token", sa.Boolean(), nullable=False),
        sa.Column("quota_blocked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("quota_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_official_accounts")),
        sa.UniqueConstraint("appid", name=op.f("uq_official_accounts_appid")),
    )
    op.create_table(
        "credentials",
        sa.Column("id", BigId, nullable=False),
        sa.Column("official_account_id", BigId, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["official_account_id"],
            ["official_accounts.id"],
            name=op.f("fk_credentials_official_account_id_official_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credentials")),
        sa.UniqueConstraint(
            "official_account_id", "kind", name=op.f("uq_credentials_official_account_id_kind")
        ),
    )
    op.create_table(
        "inbox",
        sa.Column("id", BigId, nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=48), nullable=False),
        sa.Column("dedupe_key", sa.String(length=255), nullable=False),
        sa.Column("official_account_id", BigId, nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["official_account_id"],
            ["official_accounts.id"],
            name=op.f("fk_inbox_official_account_id_official_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_inbox_dedupe_key")),
    )
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.create_index("ix_inbox_unprocessed", ["processed_at", "received_at"], unique=False)

    op.create_table(
        "mini_programs",
        sa.Column("id", BigId, nullable=False),
        sa.Column("appid", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("app_secret", sa.Text(), nullable=False),
        sa.Column("official_account_id", BigId, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["official_account_id"],
            ["official_accounts.id"],
            name=op.f("fk_mini_programs_official_account_id_official_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mini_programs")),
        sa.UniqueConstraint("appid", name=op.f("uq_mini_programs_appid")),
    )
    op.create_table(
        "events",
        sa.Column("id", BigId, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("official_account_id", BigId, nullable=False),
        sa.Column("mini_program_id", BigId, nullable=False),
        sa.Column("card_id", sa.String(length=32), nullable=True),
        sa.Column("card_type", sa.String(length=32), nullable=False),
        sa.Column("card_status", sa.String(length=32), nullable=False),
        sa.Column("card_status_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("code_mode", sa.String(length=16), nullable=False),
        sa.Column("code_length", sa.Integer(), nullable=False),
        sa.Column("code_alphabet", sa.String(length=64), nullable=False),
        sa.Column("launch_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("preissue_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("orders_total", sa.Integer(), server_default="0", nullable=False),
        sa.Column("tickets_total", sa.Integer(), server_default="0", nullable=False),
        sa.Column("orders_complete", sa.Integer(), server_default="0", nullable=False),
        sa.Column("tickets_issued", sa.Integer(), server_default="0", nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("code_mode IN ('custom', 'deposit')", name=op.f("ck_events_code_mode")),
        sa.CheckConstraint("code_length BETWEEN 6 AND 20", name=op.f("ck_events_code_length")),
        sa.ForeignKeyConstraint(
            ["mini_program_id"], ["mini_programs.id"], name=op.f("fk_events_mini_program_id_mini_programs")
        ),
        sa.ForeignKeyConstraint(
            ["official_account_id"],
            ["official_accounts.id"],
            name=op.f("fk_events_official_account_id_official_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("card_id", name=op.f("uq_events_card_id")),
    )
    op.create_table(
        "orders",
        sa.Column("id", BigId, nullable=False),
        sa.Column("event_id", BigId, nullable=False),
        sa.Column("order_no", sa.String(length=64), nullable=False),
        sa.Column("mp_openid", sa.String(length=64), nullable=False),
        sa.Column("unionid", sa.String(length=64), nullable=True),
        sa.Column("ticket_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("ticket_count >= 1", name=op.f("ck_orders_ticket_count_positive")),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], name=op.f("fk_orders_event_id_events")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint("event_id", "order_no", name=op.f("uq_orders_event_id_order_no")),
        sa.UniqueConstraint("id", "event_id", name=op.f("uq_orders_id_event_id")),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_orders_mp_openid"), ["mp_openid"], unique=False)

    op.create_table(
        "tickets",
        sa.Column("id", BigId, nullable=False),
        sa.Column("event_id", BigId, nullable=False),
        sa.Column("order_id", BigId, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("card_id", sa.String(length=32), nullable=False),
        sa.Column("code", sa.String(length=20), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("card_ext", sa.Text(), nullable=True),
        sa.Column("ticket_version", sa.Integer(), nullable=True),
        sa.Column("nonce", sa.String(length=32), nullable=True),
        sa.Column("timestamp", sa.Integer(), nullable=True),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("served_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("confirmed_by_client", sa.Boolean(), nullable=False),
        sa.Column("confirmed_by_wechat", sa.Boolean(), nullable=False),
        sa.Column("oa_openid", sa.String(length=64), nullable=True),
        sa.Column("unionid", sa.String(length=64), nullable=True),
        sa.Column("redeemed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('pending','ready','served','claimed','redeemed','deleted','revoked')",
            name=op.f("ck_tickets_state"),
        ),
        sa.ForeignKeyConstraint(
            ["order_id", "event_id"], ["orders.id", "orders.event_id"], name=op.f("fk_tickets_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tickets")),
        sa.UniqueConstraint("code", "card_id", name=op.f("uq_tickets_code_card_id")),
        sa.UniqueConstraint("order_id", "seq", name=op.f("uq_tickets_order_id_seq")),
        # Room for HOT updates when every outstanding ticket is re-signed (models/tickets.py).
        postgresql_with={"fillfactor": 50},
    )
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.create_index("ix_tickets_event_state", ["event_id", "state"], unique=False)

    op.create_table(
        "redemptions",
        sa.Column("id", BigId, nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("card_id", sa.String(length=32), nullable=True),
        sa.Column("event_id", BigId, nullable=True),
        sa.Column("ticket_id", BigId, nullable=True),
        sa.Column("gate", sa.String(length=64), nullable=False),
        sa.Column("result", sa.String(length=24), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("consume_sync", sa.String(length=16), nullable=False),
        sa.Column("consume_attempts", sa.Integer(), nullable=False),
        sa.Column("consume_in_doubt", sa.Integer(), nullable=False),
        sa.Column("sync_attempted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], name=op.f("fk_redemptions_event_id_events")),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], name=op.f("fk_redemptions_ticket_id_tickets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_redemptions")),
        sa.UniqueConstraint("nonce", name=op.f("uq_redemptions_nonce")),
    )
    with op.batch_alter_table("redemptions", schema=None) as batch_op:
        batch_op.create_index("ix_redemptions_consume_sync", ["consume_sync"], unique=False)
        batch_op.create_index(
            "ix_redemptions_event_gate_result", ["event_id", "gate", "result"], unique=False
        )
        batch_op.create_index(
            "uq_redemptions_ok_ticket",
            ["ticket_id"],
            unique=True,
            postgresql_where=sa.text("result = 'ok'"),
            sqlite_where=sa.text("result = 'ok'"),
        )

    op.create_table(
        "revocations",
        sa.Column("id", BigId, nullable=False),
        sa.Column("ticket_id", BigId, nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("previous_state", sa.String(length=16), nullable=False),
        sa.Column("wechat_sync", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("sync_attempted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], name=op.f("fk_revocations_ticket_id_tickets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_revocations")),
        sa.UniqueConstraint("ticket_id", name=op.f("uq_revocations_ticket_id")),
    )
    with op.batch_alter_table("revocations", schema=None) as batch_op:
        batch_op.create_index("ix_revocations_wechat_sync", ["wechat_sync"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("revocations", schema=None) as batch_op:
        batch_op.drop_index("ix_revocations_wechat_sync")

    op.drop_table("revocations")
    with op.batch_alter_table("redemptions", schema=None) as batch_op:
        batch_op.drop_index("uq_redemptions_ok_ticket")
        batch_op.drop_index("ix_redemptions_event_gate_result")
        batch_op.drop_index("ix_redemptions_consume_sync")

    op.drop_table("redemptions")
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index("ix_tickets_event_state")

    op.drop_table("tickets")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_orders_mp_openid"))

    op.drop_table("orders")
    op.drop_table("events")
    op.drop_table("mini_programs")
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_index("ix_inbox_unprocessed")

    op.drop_table("inbox")
    op.drop_table("credentials")
    op.drop_table("official_accounts")
