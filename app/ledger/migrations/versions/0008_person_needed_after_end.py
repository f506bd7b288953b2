"""Ended alarms stay in front of a person while something raised after their end waits for one.

``person_needed_at``: when an alarm that had ended was raised to a person (a TrackTik dispatch created
after the operator's End, a step whose answer was lost, an Alta alert to end by hand). Such an alarm
is on the needs-a-person list, the dashboard's queue and the ``alarm_bridge_alarms_needing_person``
gauge until an operator acknowledges it, which clears it; its outcome stands, and the retention
command keeps it. NULL: nothing waits (and always NULL on an alarm not ended, whose state says it).
The partial index holds only the few such rows, which the lists and the gauge read beside the active
alarms. Nothing to backfill: alarms ended before the upgrade keep their lines on their timelines.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_alarms_person_needed_at"


def upgrade() -> None:
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("person_needed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            INDEX,
            ["person_needed_at"],
            unique=False,
            postgresql_where=sa.text("person_needed_at IS NOT NULL"),
            sqlite_where=sa.text("person_needed_at IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.drop_index(INDEX)
        batch_op.drop_column("person_needed_at")
