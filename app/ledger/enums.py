"""The values the ledger stores and the domain decides on: an alarm's priority, and the states of
alarms and actions.

Both sides name them: the domain when it plans and runs steps, the ledger in its columns, check
constraints and read queries. They live here, below both, and import nothing of ours, so a ledger
query never has to load the domain to know what "life-safety" is. ``app.domain.sia`` and
``app.ledger.models`` re-export the names they have always offered.
"""

from __future__ import annotations

from enum import StrEnum


class Priority(StrEnum):
    """How urgently the bridge must act on a signal; it picks the Celery queue. Declared most urgent
    first: the operator's queue is ordered this way."""

    LIFE_SAFETY = "life_safety"
    PROPERTY = "property"
    TECHNICAL = "technical"
    INFORMATIONAL = "informational"

    @property
    def rank(self) -> int:
        """Its place in the declared order: lower goes first wherever signals wait."""
        return _PRIORITY_ORDER.index(self)


_PRIORITY_ORDER: tuple[Priority, ...] = tuple(Priority)


class AlarmState(StrEnum):
    OPEN = "open"
    NEEDS_PERSON = "needs_person"  # still active; something only a person can resolve
    ENDED = "ended"  # has an outcome; nothing new starts


ACTIVE_ALARM_STATES = (AlarmState.OPEN, AlarmState.NEEDS_PERSON)


class Outcome(StrEnum):
    DISPATCHED = "dispatched"
    CANCELLED = "cancelled"
    FALSE_ALARM = "false_alarm"
    VERIFIED = "verified"
    UNROUTED = "unrouted"
    TEST = "test"


class ActionState(StrEnum):
    PENDING = "pending"  # waiting for due_at (not handed to the broker)
    QUEUED = "queued"  # handed to the broker, not yet claimed
    RUNNING = "running"  # claimed by a worker under a lease
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # permanent error or attempts exhausted: a person must look
    CANCELLED = "cancelled"  # no longer wanted (cancel code, alarm ended)


# What is still to happen: the only actions a gauge counts or a scan of "work to do" reads.
LIVE_ACTION_STATES = (ActionState.PENDING, ActionState.QUEUED, ActionState.RUNNING)
TERMINAL_ACTION_STATES = frozenset({ActionState.SUCCEEDED, ActionState.FAILED, ActionState.CANCELLED})
