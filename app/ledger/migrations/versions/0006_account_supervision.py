"""Supervision of each account's link: its deadlines live in the ledger (issue 18).

``account_supervision``: one row per supervised (source, account), with when it was last heard from
(any event, a DC-09 link frame, an automatic test ``RP``), the deadline of each check, and the
trouble alarm an outage opened. The tick reads the deadlines through their indexes; a NULL deadline
is never due (not supervised, or an outage whose alarm is open). A new table: nothing to backfill;
rows are armed from the sites file by the first tick after the upgrade.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "account_supervision"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_key", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("site_key", sa.String(length=64), nullable=False),
        sa.Column("supervised_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_contact_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_link_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_test_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("link_period_s", sa.Integer(), nullable=True),
        sa.Column("test_period_s", sa.Integer(), nullable=True),
        sa.Column("link_deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("test_deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("link_alarm_id", sa.Integer(), nullable=True),
        sa.Column("test_alarm_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_supervision")),
    )
    with op.batch_alter_table(TABLE, schema=None) as batch_op:
        batch_op.create_index("uq_account_supervision_source_account", ["source_key", "account"], unique=True)
        batch_op.create_index("ix_account_supervision_link_deadline_at", ["link_deadline_at"], unique=False)
        batch_op.create_index("ix_account_supervision_test_deadline_at", ["test_deadline_at"], unique=False)
        for column in ("link_alarm_id", "test_alarm_id"):
            batch_op.create_index(
                f"ix_account_supervision_{column}",
                [column],
                unique=False,
                postgresql_where=sa.text(f"{column} IS NOT NULL"),
                sqlite_where=sa.text(f"{column} IS NOT NULL"),
            )


def downgrade() -> None:
    op.drop_table(TABLE)
