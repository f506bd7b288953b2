"""Actions say what they wait for, so the event that ends the wait starts them (no polling).

``waiting_on``: ``"911"`` for a life-safety alarm's steps held until its RapidSOS request leaves;
``"refs"`` for a step deferred until another step records what it needs (the Alta guid, the video
links). NULL: not waiting on anything (a delay or a backoff runs to its ``due_at``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("waiting_on", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.drop_column("waiting_on")
