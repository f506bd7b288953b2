"""Hot statements independent of history, and the one door through which old alarms may leave.

Indexes so that what intake, the lists, the dead-letter view, the metrics and a deletion read does
not grow with a year of history (issue 19); the table the retention command records its runs in;
and the timeline's append-only trigger rebuilt so that only a transaction holding a purge permit
may delete (the retention command's), ``TRUNCATE`` is refused as ``DELETE`` is, and
``session_replication_role = replica`` no longer switches it off (``ENABLE ALWAYS``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNATTACHED = "alarm_id IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        # The early-restore lookup of every new alarm reads only events no alarm has taken.
        batch_op.create_index(
            "ix_events_unattached",
            ["source", "account", "zone", "received_at"],
            unique=False,
            postgresql_where=sa.text(UNATTACHED),
            sqlite_where=sa.text(UNATTACHED),
        )
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        # State second: joining, restoring and cancelling read an account's live alarms only.
        batch_op.drop_index("ix_alarms_open_group")
        batch_op.create_index("ix_alarms_account_state", ["account", "state", "zone", "family"])
        # The lists walk these in their order and stop at the page's end.
        batch_op.create_index("ix_alarms_priority_opened_at", ["priority", "opened_at", "id"])
        batch_op.create_index("ix_alarms_opened_at", ["opened_at", "id"])
        batch_op.create_index("ix_alarms_site_opened_at", ["site_key", "opened_at", "id"])
        batch_op.create_index("ix_alarms_state_ended_at", ["state", "ended_at", "id"])  # retention
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.create_index("ix_actions_state_updated_at", ["state", "updated_at", "id"])
    with op.batch_alter_table("timeline_entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_timeline_entries_action_id"), ["action_id"])
        batch_op.create_index(batch_op.f("ix_timeline_entries_event_id"), ["event_id"])

    op.create_table(
        "timeline_purge_permits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("txid", sa.BigInteger(), nullable=True),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_timeline_purge_permits")),
    )
    op.create_table(
        "archive_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("alarms", sa.Integer(), nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("actions", sa.Integer(), nullable=False),
        sa.Column("timeline_entries", sa.Integer(), nullable=False),
        sa.Column("first_alarm_id", sa.Integer(), nullable=True),
        sa.Column("last_alarm_id", sa.Integer(), nullable=True),
        sa.Column("oldest_ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("newest_ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("export_path", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_archive_runs")),
    )
    _replace_append_only_guard()


# A permit is a row the retention transaction inserts and removes before it commits, so no other
# transaction ever sees it; on PostgreSQL it also names the transaction, so a permit left behind by
# hand opens nothing for anyone else.
_PG_GUARD = """
CREATE OR REPLACE FUNCTION timeline_entries_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' AND EXISTS (
        SELECT 1 FROM timeline_purge_permits WHERE txid = txid_current()
    ) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'timeline_entries is append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql
"""

_PG_GUARD_0001 = """
CREATE OR REPLACE FUNCTION timeline_entries_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'timeline_entries is append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql
"""


def _replace_append_only_guard() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_GUARD)
        op.execute(
            "CREATE TRIGGER timeline_entries_no_truncate BEFORE TRUNCATE ON timeline_entries "
            "FOR EACH STATEMENT EXECUTE FUNCTION timeline_entries_append_only()"
        )
        # ALWAYS: also under session_replication_role = replica, which skips ordinary triggers.
        for trigger in ("timeline_entries_append_only", "timeline_entries_no_truncate"):
            op.execute(f"ALTER TABLE timeline_entries ENABLE ALWAYS TRIGGER {trigger}")
        return
    op.execute("DROP TRIGGER IF EXISTS timeline_entries_no_delete")
    op.execute(
        "CREATE TRIGGER timeline_entries_no_delete BEFORE DELETE ON timeline_entries "
        "WHEN NOT EXISTS (SELECT 1 FROM timeline_purge_permits) "
        "BEGIN SELECT RAISE(ABORT, 'timeline_entries is append-only (DELETE refused)'); END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS timeline_entries_no_truncate ON timeline_entries")
        op.execute(_PG_GUARD_0001)
        op.execute("ALTER TABLE timeline_entries ENABLE TRIGGER timeline_entries_append_only")
    else:
        op.execute("DROP TRIGGER IF EXISTS timeline_entries_no_delete")
        op.execute(
            "CREATE TRIGGER timeline_entries_no_delete BEFORE DELETE ON timeline_entries "
            "BEGIN SELECT RAISE(ABORT, 'timeline_entries is append-only (DELETE refused)'); END"
        )
    op.drop_table("archive_runs")
    op.drop_table("timeline_purge_permits")
    with op.batch_alter_table("timeline_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_timeline_entries_event_id"))
        batch_op.drop_index(batch_op.f("ix_timeline_entries_action_id"))
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.drop_index("ix_actions_state_updated_at")
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.drop_index("ix_alarms_state_ended_at")
        batch_op.drop_index("ix_alarms_site_opened_at")
        batch_op.drop_index("ix_alarms_opened_at")
        batch_op.drop_index("ix_alarms_priority_opened_at")
        batch_op.drop_index("ix_alarms_account_state")
        batch_op.create_index("ix_alarms_open_group", ["account", "zone", "family", "state"])
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_unattached")
