"""Events without an id or a time of their own are recognised within a sliding window.

``content_key``: a hash of what such an event says (source, account, code, zone, message, phase).
Intake looks for one recorded within DEDUPE_WINDOW_S of a new event's receive time, under the
account's lock, instead of hashing the receive time into fixed buckets (a body at second 296 of a
bucket and its replay 6 s later were two alarms). NULL for events with a sender id or time, whose
``dedupe_key`` recognises them on its own. The index holds only the non-NULL rows: on an existing
ledger it starts empty, and building it is one read of the table. Events recorded before the upgrade
have no ``content_key``: a retry spanning the upgrade of a body without an id or a time is recorded
once more (at most one window's worth).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WITH_CONTENT_KEY = "content_key IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content_key", sa.String(length=64), nullable=True))
        batch_op.create_index(
            "ix_events_content_key",
            ["content_key", "received_at"],
            unique=False,
            postgresql_where=sa.text(WITH_CONTENT_KEY),
            sqlite_where=sa.text(WITH_CONTENT_KEY),
        )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_content_key")
        batch_op.drop_column("content_key")
