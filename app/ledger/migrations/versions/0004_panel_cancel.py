"""Alarms remember that a panel's cancel stood them down while a responder still had to be recalled.

``panel_cancelled_at``: when a cancel in time (BC, OC, an opening by a user) stood the alarm's
response down but a responder without a cancel API (a TrackTik dispatch) was engaged, so the alarm
waits for a person instead of ending. An operator's acknowledge or End then ends it as ``cancelled``.
NULL: no such cancel.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("panel_cancelled_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.drop_column("panel_cancelled_at")
