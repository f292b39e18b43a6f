"""check-in lists, gates, ticket presence; redemptions gain list, direction and offline fields

Every existing event gets its default single-use list, so gates keep working as before.

Revision ID: 0005
Revises: 0001
Create Date: 2026-11-29 15:30:00.000000
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SINGLE_ENTRY = "result = 'ok' AND direction = 'entry' AND single_use AND NOT offline"


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("timezone", sa.String(length=64), server_default="Asia/Shanghai", nullable=False))
    op.create_table(
        "checkin_lists",
        sa.Column("id", BigId, nullable=False),
        sa.Column("event_id", BigId, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("policy", sa.String(length=8), nullable=False),
        sa.Column("consume_at_end", sa.Boolean(), nullable=False),
        sa.Column("max_entries", sa.Integer(), nullable=True),
        sa.Column("max_per_day", sa.Integer(), nullable=True),
        sa.Column("entry_after_exit_only", sa.Boolean(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("capacity", sa.Integer(), nullable=True),
        sa.Column("inside_now", sa.Integer(), nullable=False),
        sa.Column("snapshot_key", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], name=op.f("fk_checkin_lists_event_id_events")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkin_lists")),
        sa.UniqueConstraint("event_id", "name", name=op.f("uq_checkin_lists_event_id_name")),
    )
    with op.batch_alter_table("checkin_lists", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_checkin_lists_event_id"), ["event_id"], unique=False)
        batch_op.create_index(
            "uq_checkin_lists_default",
            ["event_id"],
            unique=True,
            postgresql_where=sa.text("is_default"),
            sqlite_where=sa.text("is_default"),
        )
    op.create_table(
        "gates",
        sa.Column("id", BigId, nullable=False),
        sa.Column("event_id", BigId, nullable=False),
        sa.Column("list_id", BigId, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], name=op.f("fk_gates_event_id_events")),
        sa.ForeignKeyConstraint(["list_id"], ["checkin_lists.id"], name=op.f("fk_gates_list_id_checkin_lists")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gates")),
        sa.UniqueConstraint("event_id", "name", name=op.f("uq_gates_event_id_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_gates_token_hash")),
    )
    with op.batch_alter_table("gates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_gates_list_id"), ["list_id"], unique=False)
    op.create_table(
        "ticket_presence",
        sa.Column("ticket_id", BigId, nullable=False),
        sa.Column("list_id", BigId, nullable=False),
        sa.Column("event_id", BigId, nullable=False),
        sa.Column("inside", sa.Boolean(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=True),
        sa.Column("day_entries", sa.Integer(), nullable=False),
        sa.Column("last_scan_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["list_id"], ["checkin_lists.id"], name=op.f("fk_ticket_presence_list_id_checkin_lists")
        ),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], name=op.f("fk_ticket_presence_ticket_id_tickets")),
        sa.PrimaryKeyConstraint("ticket_id", "list_id", name=op.f("pk_ticket_presence")),
    )
    with op.batch_alter_table("ticket_presence", schema=None) as batch_op:
        batch_op.create_index("ix_ticket_presence_list_updated", ["list_id", "updated_at"], unique=False)
        batch_op.create_index("ix_ticket_presence_event_inside", ["event_id", "inside"], unique=False)

    with op.batch_alter_table("redemptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("list_id", BigId, nullable=True))
        batch_op.add_column(sa.Column("direction", sa.String(length=8), server_default="entry", nullable=False))
        batch_op.add_column(sa.Column("single_use", sa.Boolean(), server_default=sa.text("true"), nullable=False))
        batch_op.add_column(sa.Column("offline", sa.Boolean(), server_default=sa.text("false"), nullable=False))
        batch_op.add_column(sa.Column("scanned_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("conflict", sa.Text(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_redemptions_list_id_checkin_lists"), "checkin_lists", ["list_id"], ["id"]
        )
        batch_op.drop_index("uq_redemptions_ok_ticket")
        batch_op.create_index(
            "uq_redemptions_single_entry",
            ["ticket_id"],
            unique=True,
            postgresql_where=sa.text(_SINGLE_ENTRY),
            sqlite_where=sa.text(_SINGLE_ENTRY),
        )
        batch_op.create_index("ix_redemptions_list_result", ["list_id", "result"], unique=False)
        batch_op.create_index("ix_redemptions_ticket", ["ticket_id"], unique=False)

    conn = op.get_bind()
    lists = sa.table(
        "checkin_lists",
        *(sa.column(name) for name in ("event_id", "name", "is_default", "policy", "consume_at_end")),
        *(sa.column(name) for name in ("entry_after_exit_only", "inside_now", "snapshot_key")),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    now = sa.func.now() if conn.dialect.name == "postgresql" else sa.func.current_timestamp()
    for event_id in conn.execute(sa.text("SELECT id FROM events")).scalars():
        conn.execute(
            lists.insert().values(
                event_id=event_id,
                name="default",
                is_default=True,
                policy="single",
                consume_at_end=False,
                entry_after_exit_only=False,
                inside_now=0,
                snapshot_key=secrets.token_hex(32),
                created_at=now,
                updated_at=now,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("redemptions", schema=None) as batch_op:
        batch_op.drop_index("ix_redemptions_ticket")
        batch_op.drop_index("ix_redemptions_list_result")
        batch_op.drop_index("uq_redemptions_single_entry")
        batch_op.create_index(
            "uq_redemptions_ok_ticket",
            ["ticket_id"],
            unique=True,
            postgresql_where=sa.text("result = 'ok'"),
            sqlite_where=sa.text("result = 'ok'"),
        )
        batch_op.drop_constraint(batch_op.f("fk_redemptions_list_id_checkin_lists"), type_="foreignkey")
        for column in ("conflict", "scanned_at", "offline", "single_use", "direction", "list_id"):
            batch_op.drop_column(column)
    op.drop_table("ticket_presence")
    op.drop_table("gates")
    op.drop_table("checkin_lists")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("timezone")
