"""ticket classes: an order's optional class, and the classes a check-in list admits (NULL:
every ticket of the event)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 16:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("ticket_class", sa.String(length=32), nullable=True))
    op.add_column("checkin_lists", sa.Column("ticket_classes", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("checkin_lists", "ticket_classes")
    op.drop_column("orders", "ticket_class")
