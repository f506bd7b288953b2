"""Actions remember when the watchdog raised their alarm for them, so it raises once per finding.

``watchdog_raised_at``: when the watchdog last raised the step's alarm to a person because the step
was late (not started, its lease expired and not re-driven, or failing for too long). The watchdog
passes over a step it has raised since the step became late in the way it is now (since its
``due_at``, its ``lease_until`` or its ``created_at``), so an operator's acknowledge is not undone on
the next tick during an outage; a step late again (retried, re-leased, re-planned) raises it again.
NULL: never raised. Nothing to backfill: a step late at the upgrade raises its open alarm once more.

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


def upgrade() -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("watchdog_raised_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.drop_column("watchdog_raised_at")
