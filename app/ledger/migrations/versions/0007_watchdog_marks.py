"""Actions remember which lateness the watchdog raised their alarm for, so it raises once per finding.

One mark per way a step can be late, holding that way's column as it was when the watchdog raised the
step's alarm to a person for it: ``watchdog_lease_mark`` (its ``lease_until``: the lease expired and
was not re-driven), ``watchdog_due_mark`` (its ``due_at``: due and not started) and
``watchdog_failing_mark`` (its ``created_at``: failing for too long). The watchdog passes over a step
while it is late only in ways whose mark equals the column, so an operator's acknowledge is not undone
on the next tick during an outage; a step late another way, or again (retried, re-leased,
re-planned: a new column value), raises it again. Equality, not a time comparison: the raise happens
on the beat host's clock, the columns are written on the workers'. NULL: never raised that way.
Nothing to backfill: a step late at the upgrade raises its open alarm once more.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MARKS = ("watchdog_lease_mark", "watchdog_due_mark", "watchdog_failing_mark")


def upgrade() -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        for mark in MARKS:
            batch_op.add_column(sa.Column(mark, sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        for mark in reversed(MARKS):
            batch_op.drop_column(mark)
