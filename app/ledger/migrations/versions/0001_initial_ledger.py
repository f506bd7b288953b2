"""The ledger: events, alarms, actions and the append-only timeline.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "alarms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_key", sa.String(length=64), nullable=True),
        sa.Column("source_key", sa.String(length=64), nullable=True),
        sa.Column("account", sa.String(length=64), nullable=True),
        sa.Column("zone", sa.String(length=64), nullable=True),
        sa.Column("code", sa.String(length=16), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("family", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("needs_person_reason", sa.Text(), nullable=True),
        sa.Column("verification", sa.String(length=16), nullable=True),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_event_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("restored_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refs", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.CheckConstraint(
            "outcome IS NULL OR outcome IN "
            "('dispatched', 'cancelled', 'false_alarm', 'verified', 'unrouted', 'test')",
            name=op.f("ck_alarms_outcome"),
        ),
        sa.CheckConstraint("state IN ('open', 'needs_person', 'ended')", name=op.f("ck_alarms_state")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarms")),
    )
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.create_index("ix_alarms_open_group", ["account", "zone", "family", "state"], unique=False)
        batch_op.create_index("ix_alarms_state_opened_at", ["state", "opened_at"], unique=False)

    op.create_table(
        "actions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alarm_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=32), nullable=False),
        sa.Column("queue", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("lease_token", sa.String(length=36), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancellable", sa.Boolean(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("outcome_unknown", sa.Boolean(), nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("params", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("result", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'queued', 'running', 'succeeded', 'failed', 'cancelled')",
            name=op.f("ck_actions_state"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_actions_attempts_not_negative")),
        sa.ForeignKeyConstraint(["alarm_id"], ["alarms.id"], name=op.f("fk_actions_alarm_id_alarms")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_actions")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_actions_idempotency_key")),
    )
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_actions_alarm_id"), ["alarm_id"], unique=False)
        batch_op.create_index("ix_actions_state_due_at", ["state", "due_at"], unique=False)
        batch_op.create_index("ix_actions_state_lease_until", ["state", "lease_until"], unique=False)

    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("sender_event_id", sa.String(length=128), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("clock_skew_s", sa.Double(), nullable=True),
        sa.Column("account", sa.String(length=64), nullable=True),
        sa.Column("zone", sa.String(length=64), nullable=True),
        sa.Column("code", sa.String(length=16), nullable=True),
        sa.Column("site_key", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("alarm_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["alarm_id"], ["alarms.id"], name=op.f("fk_events_alarm_id_alarms")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_events_dedupe_key")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_alarm_id"), ["alarm_id"], unique=False)

    op.create_table(
        "timeline_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alarm_id", sa.Integer(), nullable=True),
        sa.Column("action_id", sa.Integer(), nullable=True),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.ForeignKeyConstraint(
            ["action_id"], ["actions.id"], name=op.f("fk_timeline_entries_action_id_actions")
        ),
        sa.ForeignKeyConstraint(
            ["alarm_id"], ["alarms.id"], name=op.f("fk_timeline_entries_alarm_id_alarms")
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["events.id"], name=op.f("fk_timeline_entries_event_id_events")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_timeline_entries")),
    )
    with op.batch_alter_table("timeline_entries", schema=None) as batch_op:
        batch_op.create_index("ix_timeline_alarm_at", ["alarm_id", "at"], unique=False)

    _make_timeline_append_only()


# The timeline is evidence of what the bridge did and when: the database itself refuses to change
# or remove a line, whatever the application code does.
_PG_FUNCTION = """
CREATE FUNCTION timeline_entries_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'timeline_entries is append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql
"""


def _make_timeline_append_only() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER timeline_entries_append_only BEFORE UPDATE OR DELETE ON timeline_entries "
            "FOR EACH ROW EXECUTE FUNCTION timeline_entries_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER timeline_entries_no_{verb.lower()} BEFORE {verb} ON timeline_entries "
                f"BEGIN SELECT RAISE(ABORT, 'timeline_entries is append-only ({verb} refused)'); END"
            )


def _drop_timeline_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS timeline_entries_append_only ON timeline_entries")
        op.execute("DROP FUNCTION IF EXISTS timeline_entries_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS timeline_entries_no_update")
        op.execute("DROP TRIGGER IF EXISTS timeline_entries_no_delete")


def downgrade() -> None:
    _drop_timeline_triggers()

    with op.batch_alter_table("timeline_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_timeline_alarm_at")

    op.drop_table("timeline_entries")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_alarm_id"))

    op.drop_table("events")
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.drop_index("ix_actions_state_lease_until")
        batch_op.drop_index("ix_actions_state_due_at")
        batch_op.drop_index(batch_op.f("ix_actions_alarm_id"))

    op.drop_table("actions")
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.drop_index("ix_alarms_state_opened_at")
        batch_op.drop_index("ix_alarms_open_group")

    op.drop_table("alarms")
