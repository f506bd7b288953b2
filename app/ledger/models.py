"""The alarm ledger's tables: the source of truth for every event, alarm, action and timeline line.

Redis may be lost at any moment; these rows may not. An action row is the durable promise that a
step will run: the broker message that announces it is only a doorbell.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    or_,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import ColumnElement

# Re-exported: the domain has always imported the states from here.
from app.ledger.enums import ACTIVE_ALARM_STATES as ACTIVE_ALARM_STATES
from app.ledger.enums import LIVE_ACTION_STATES as LIVE_ACTION_STATES
from app.ledger.enums import TERMINAL_ACTION_STATES as TERMINAL_ACTION_STATES
from app.ledger.enums import ActionState as ActionState
from app.ledger.enums import AlarmState as AlarmState
from app.ledger.enums import Outcome as Outcome


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite (no zone support) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONDocument = JSON().with_variant(JSONB(), "postgresql")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONDocument}

    if TYPE_CHECKING:
        # Every model here is declared on one Table; SQLAlchemy types the attribute as any FromClause,
        # which Core's insert() and update() refuse (the hot paths are Core statements on __table__).
        __table__: ClassVar[Table]


WAITING_FOR_911 = "911"  # a life-safety alarm's step held until the alarm's RapidSOS request leaves
WAITING_FOR_REFS = "refs"  # a step deferred until another step records what it needs on the alarm


def _in(column: str, values: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class Alarm(Base):
    """One incident at one site: events for the same site, zone and family group into it."""

    __tablename__ = "alarms"
    __table_args__ = (
        CheckConstraint(_in("state", AlarmState), name="state"),
        CheckConstraint(f"outcome IS NULL OR {_in('outcome', Outcome)}", name="outcome"),
        # Every hot read is bounded by live rows or by its page, never by history (migration 0002).
        Index("ix_alarms_account_state", "account", "state", "zone", "family"),
        Index("ix_alarms_state_opened_at", "state", "opened_at"),
        Index("ix_alarms_priority_opened_at", "priority", "opened_at", "id"),
        Index("ix_alarms_opened_at", "opened_at", "id"),
        Index("ix_alarms_site_opened_at", "site_key", "opened_at", "id"),
        Index("ix_alarms_state_ended_at", "state", "ended_at", "id"),
        # Ended alarms a person must still act on: the few rows the lists and the gauge add to the
        # active ones (migration 0008).
        Index(
            "ix_alarms_person_needed_at",
            "person_needed_at",
            postgresql_where=text("person_needed_at IS NOT NULL"),
            sqlite_where=text("person_needed_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site_key: Mapped[str | None] = mapped_column(String(64))  # None: no site claims it (unrouted)
    source_key: Mapped[str | None] = mapped_column(String(64))
    account: Mapped[str | None] = mapped_column(String(64))  # panel account or Alta alarm zone id
    zone: Mapped[str | None] = mapped_column(String(64))
    code: Mapped[str | None] = mapped_column(String(16))  # the SIA code that opened it (None: Alta)
    description: Mapped[str | None] = mapped_column(Text)
    family: Mapped[str] = mapped_column(String(32))
    priority: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default=AlarmState.OPEN)
    outcome: Mapped[str | None] = mapped_column(String(32))
    needs_person_reason: Mapped[str | None] = mapped_column(Text)
    verification: Mapped[str | None] = mapped_column(String(16))  # an operator's verdict: valid/false/none
    event_count: Mapped[int] = mapped_column(Integer, default=1)
    opened_at: Mapped[datetime]
    last_event_at: Mapped[datetime]
    restored_at: Mapped[datetime | None]  # the zone reported normal again (not a cancel)
    verified_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    # A panel's cancel stood the response down in time while a responder without a cancel API (a
    # TrackTik dispatch) was engaged: the alarm waits for a person, whose acknowledge (or End without
    # an outcome) ends it as cancelled; whatever it ends as, a late success is stood down (migration
    # 0004).
    panel_cancelled_at: Mapped[datetime | None]
    # An ended alarm raised to a person after it ended (a responder to recall by hand, a step whose
    # answer was lost, an alert to end by hand): since when. It keeps the alarm on the needs-a-person
    # list until an operator acknowledges it, which clears it; the outcome stands (migration 0008).
    # Only an ended alarm has one (flag_for_person sets it on no other): an alarm not ended says the
    # same with its state (needs_person), and the reads rely on that rule.
    person_needed_at: Mapped[datetime | None]
    # What the upstreams know this alarm as (Alta guid, video links, TrackTik dispatch task, ...):
    # written by the workers, read by later steps and shown to operators.
    refs: Mapped[dict[str, Any]] = mapped_column(default=dict)

    events: Mapped[list[Event]] = relationship(back_populates="alarm", order_by="Event.id")
    actions: Mapped[list[Action]] = relationship(back_populates="alarm", order_by="Action.id")

    @hybrid_property
    def needs_person(self) -> bool:
        """True while something only a person can resolve is pending, also after the alarm ended."""
        return self.state == AlarmState.NEEDS_PERSON or self.person_needed_at is not None

    @needs_person.inplace.expression
    @classmethod
    def _needs_person_expression(cls) -> ColumnElement[bool]:
        return or_(cls.state == AlarmState.NEEDS_PERSON, cls.person_needed_at.is_not(None))

    def flag_for_person(self, reason: str, *, now: datetime | None = None) -> None:
        """Raise the alarm to a person; the first reason is kept in front.

        An active alarm's state says so (``needs_person``); an ended one keeps its state and outcome
        and is marked ``person_needed_at`` (``now``, else the clock), until an operator acknowledges it.
        """
        if self.state != AlarmState.ENDED:
            self.state = AlarmState.NEEDS_PERSON
        elif self.person_needed_at is None:
            self.person_needed_at = now or utcnow()
        reasons = [r for r in (self.needs_person_reason or "").split("; ") if r]
        if reason not in reasons:
            reasons.append(reason)
        self.needs_person_reason = "; ".join(reasons)[:2000]

    @property
    def is_active(self) -> bool:
        return self.state != AlarmState.ENDED


class Event(Base):
    """One signal exactly as received, with the key that recognises a retried delivery."""

    __tablename__ = "events"
    __table_args__ = (
        # Restores waiting for their alarm: the only events intake searches, whatever the history.
        Index(
            "ix_events_unattached",
            "source",
            "account",
            "zone",
            "received_at",
            postgresql_where=text("alarm_id IS NULL"),
            sqlite_where=text("alarm_id IS NULL"),
        ),
        # The sliding dedupe window of events without an id or a time of their own (migration 0005).
        Index(
            "ix_events_content_key",
            "content_key",
            "received_at",
            postgresql_where=text("content_key IS NOT NULL"),
            sqlite_where=text("content_key IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Enforced by the database: a retried webhook or a racing duplicate cannot make a second row.
    dedupe_key: Mapped[str] = mapped_column(String(128), unique=True)
    # What the event says, hashed, for events without an id or a time of their own: intake looks it
    # up within DEDUPE_WINDOW_S of the receive time, under the account's lock. NULL for the others.
    content_key: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))
    sender_event_id: Mapped[str | None] = mapped_column(String(128))
    received_at: Mapped[datetime]
    occurred_at: Mapped[datetime | None]  # the sender's own clock, kept beside ours
    clock_skew_s: Mapped[float | None]
    account: Mapped[str | None] = mapped_column(String(64))
    zone: Mapped[str | None] = mapped_column(String(64))
    code: Mapped[str | None] = mapped_column(String(16))
    site_key: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    alarm_id: Mapped[int | None] = mapped_column(ForeignKey("alarms.id"), index=True)

    alarm: Mapped[Alarm | None] = relationship(back_populates="events")


class Action(Base):
    """A step the plan calls for, and everything needed to run it exactly once in effect."""

    __tablename__ = "actions"
    __table_args__ = (
        CheckConstraint(_in("state", ActionState), name="state"),
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
        Index("ix_actions_state_due_at", "state", "due_at"),
        Index("ix_actions_state_lease_until", "state", "lease_until"),
        Index("ix_actions_state_updated_at", "state", "updated_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    alarm_id: Mapped[int | None] = mapped_column(ForeignKey("alarms.id"), index=True)  # None: system
    kind: Mapped[str] = mapped_column(String(64))  # the task name that performs it
    target: Mapped[str] = mapped_column(String(32))  # the upstream it talks to
    queue: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default=ActionState.PENDING)
    due_at: Mapped[datetime]
    enqueued_at: Mapped[datetime | None]  # last hand-off to the broker; None: the dispatcher must send
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    lease_token: Mapped[str | None] = mapped_column(String(36))
    lease_until: Mapped[datetime | None]
    cancellable: Mapped[bool] = mapped_column(default=False)
    # Sent with every upstream call for this action, so a retry is recognised where the vendor allows.
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    outcome_unknown: Mapped[bool] = mapped_column(default=False)  # last attempt may have applied upstream
    # What a pending step waits for besides its due time (WAITING_FOR_911, WAITING_FOR_REFS): the event
    # that ends the wait starts it at once; its due_at is only the latest it waits.
    waiting_on: Mapped[str | None] = mapped_column(String(16))
    # The lateness the watchdog last raised the alarm to a person for, one mark per way of being late:
    # the lease_until, due_at or created_at the step was late with. It passes over the step while it is
    # late only in ways whose mark equals the column (app.domain.watchdog, migration 0007). None: never.
    watchdog_lease_mark: Mapped[datetime | None]
    watchdog_due_mark: Mapped[datetime | None]
    watchdog_failing_mark: Mapped[datetime | None]
    external_id: Mapped[str | None] = mapped_column(String(128))
    last_error: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]

    alarm: Mapped[Alarm | None] = relationship(back_populates="actions")


class TimelineEntry(Base):
    """An append-only line of an alarm's story; the database refuses updates and deletes."""

    __tablename__ = "timeline_entries"
    __table_args__ = (Index("ix_timeline_alarm_at", "alarm_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    alarm_id: Mapped[int | None] = mapped_column(ForeignKey("alarms.id"))
    action_id: Mapped[int | None] = mapped_column(ForeignKey("actions.id"), index=True)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id"), index=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class AccountSupervision(Base):
    """One supervised account's link: when it was last heard from, and by when it must be again.

    The deadlines live here, not in a process's memory, so a restart loses none (migration 0006). A
    deadline passed opens one trouble alarm, whose id is kept (``link_alarm_id``, ``test_alarm_id``)
    while its deadline is cleared: an account in trouble is never tripped twice for one outage. The
    next contact restores that alarm and re-arms the deadline. The alarm ids are not foreign keys:
    the retention command may archive an ended alarm while its outage lasts.
    """

    __tablename__ = "account_supervision"
    __table_args__ = (
        Index("uq_account_supervision_source_account", "source_key", "account", unique=True),
        # The tick's "deadline passed" walks, oldest first; NULL (in trouble, or not supervised) is
        # never due.
        Index("ix_account_supervision_link_deadline_at", "link_deadline_at"),
        Index("ix_account_supervision_test_deadline_at", "test_deadline_at"),
        # Accounts in trouble (the gauge, the dashboard): the few rows with an open outage.
        Index(
            "ix_account_supervision_link_alarm_id",
            "link_alarm_id",
            postgresql_where=text("link_alarm_id IS NOT NULL"),
            sqlite_where=text("link_alarm_id IS NOT NULL"),
        ),
        Index(
            "ix_account_supervision_test_alarm_id",
            "test_alarm_id",
            postgresql_where=text("test_alarm_id IS NOT NULL"),
            sqlite_where=text("test_alarm_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    source_key: Mapped[str] = mapped_column(String(64))
    account: Mapped[str] = mapped_column(String(64))  # as the sites file writes it
    site_key: Mapped[str] = mapped_column(String(64))
    supervised_since: Mapped[datetime]  # a declared account never heard from trips from here
    last_contact_at: Mapped[datetime | None]  # any event or DC-09 link frame
    last_link_at: Mapped[datetime | None]  # a DC-09 link frame (NULL link test or any frame)
    last_test_at: Mapped[datetime | None]  # an automatic test (RP)
    # The periods the deadlines were armed with (the test's includes its grace); NULL: not supervised.
    link_period_s: Mapped[int | None] = mapped_column(Integer)
    test_period_s: Mapped[int | None] = mapped_column(Integer)
    link_deadline_at: Mapped[datetime | None]
    test_deadline_at: Mapped[datetime | None]
    link_alarm_id: Mapped[int | None] = mapped_column(Integer)  # the open outage's trouble alarm
    test_alarm_id: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime]


class TimelinePurgePermit(Base):
    """Lets the transaction that holds it delete timeline lines (the retention command, nobody else).

    Inserted and removed inside that one transaction, so it is never visible to another; the
    database's trigger refuses every other delete (migration 0002).
    """

    __tablename__ = "timeline_purge_permits"

    id: Mapped[int] = mapped_column(primary_key=True)
    txid: Mapped[int | None] = mapped_column(BigInteger)  # PostgreSQL: the transaction it opens
    granted_at: Mapped[datetime]


class ArchiveRun(Base):
    """What one run of ``alarm-bridge ledger archive`` removed: the ledger's record of letting go."""

    __tablename__ = "archive_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    ended_before: Mapped[datetime]
    alarms: Mapped[int] = mapped_column(Integer)
    events: Mapped[int] = mapped_column(Integer)
    actions: Mapped[int] = mapped_column(Integer)
    timeline_entries: Mapped[int] = mapped_column(Integer)
    first_alarm_id: Mapped[int | None] = mapped_column(Integer)
    last_alarm_id: Mapped[int | None] = mapped_column(Integer)
    oldest_ended_at: Mapped[datetime | None]
    newest_ended_at: Mapped[datetime | None]
    export_path: Mapped[str | None] = mapped_column(Text)


def utcnow() -> datetime:
    """The ledger's clock: aware UTC, to the microsecond."""
    return datetime.now(UTC)
