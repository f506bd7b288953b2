"""Alarms remember their source, account, opening code and description, and when their zone restored.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("account", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("code", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("description", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("restored_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_index(batch_op.f("ix_alarms_open_group"))
        batch_op.create_index("ix_alarms_open_group", ["account", "zone", "family", "state"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.drop_index("ix_alarms_open_group")
        batch_op.create_index(
            batch_op.f("ix_alarms_open_group"), ["site_key", "zone", "family", "state"], unique=False
        )
        batch_op.drop_column("restored_at")
        batch_op.drop_column("description")
        batch_op.drop_column("code")
        batch_op.drop_column("account")
        batch_op.drop_column("source_key")
