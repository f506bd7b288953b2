"""The watchdog during a storm: thousands of late steps, statistics that lag behind, one tick cheap.

Seen in `make soak`: with 6,663 open alarms and 11,000 queued steps, and PostgreSQL's statistics
still saying "17 open alarms", the watchdog's one-join query ran 113 s per tick (a nested loop over
the alarms, each probing every live step), and two ticks at once starved the workers of the
database. The statistics here are taken while the ledger is empty, then the backlog arrives and
churns (steps claimed and queued again leave dead index entries behind, as in a storm).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, text

from app.domain import watchdog
from app.ledger.models import Action, Alarm
from app.ledger.session import make_engine, make_sessionmaker

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
BACKLOG = 4000


@pytest.mark.parametrize(
    ("raised", "acknowledged"),
    [(0, False), (2500, False), (2500, True)],
    ids=["all-open", "oldest-raised-already", "oldest-raised-and-acknowledged"],
)
def test_a_watchdog_tick_stays_cheap_under_a_backlog_the_statistics_have_not_seen(
    postgres_url: str, raised: int, acknowledged: bool
) -> None:
    """``raised``: the oldest alarms were raised to a person on earlier ticks (their 7,500 steps stay
    late, oldest in every index): the tick must still reach the open alarms behind them, as cheaply.
    ``acknowledged``: an operator has acknowledged those since (open again, their steps marked with
    the lateness they were raised for): they must not fill the walks either."""
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))  # the statistics of an empty ledger
            conn.commit()
        opened = NOW - timedelta(minutes=5)
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL synchronous_commit = off"))
            conn.execute(
                insert(Alarm.__table__),
                [
                    {"id": i, "account": f"a{i}", "zone": "1", "family": "burglary", "priority": "property",
                     "state": "needs_person" if i <= raised and not acknowledged else "open",
                     "event_count": 1,
                     "opened_at": opened + timedelta(milliseconds=i),
                     "last_event_at": opened, "refs": {}}
                    for i in range(1, BACKLOG + 1)
                ],
            )  # fmt: skip
            conn.execute(
                insert(Action.__table__),
                [
                    {"alarm_id": i, "kind": "tracktik.create_alarm", "target": "tracktik", "queue": "default",
                     "state": "queued" if i % 4 else "running", "due_at": opened, "enqueued_at": opened,
                     "lease_until": opened if i % 4 == 0 else None, "attempts": 1, "max_attempts": 8,
                     "cancellable": False, "idempotency_key": f"k{i}-{n}", "outcome_unknown": False,
                     "params": {}, "created_at": opened, "updated_at": opened,
                     "watchdog_due_mark": opened if i <= raised and acknowledged else None,
                     "watchdog_lease_mark": opened if i <= raised and acknowledged and i % 4 == 0 else None}
                    for i in range(1, BACKLOG + 1)
                    for n in range(3)
                ],
            )  # fmt: skip
        with engine.begin() as conn:  # the churn of a storm: steps claimed, retried, queued again
            for _ in range(3):
                conn.execute(text("UPDATE actions SET state = 'running' WHERE state = 'queued'"))
                conn.execute(text("UPDATE actions SET state = 'queued' WHERE lease_until IS NULL"))
        sessions = make_sessionmaker(engine)
        limits = watchdog.Limits(grace=timedelta(seconds=60), failing=timedelta(seconds=300))
        with sessions() as session:
            session.execute(text("SET statement_timeout = '5s'"))  # the old statement took minutes
            started = time.monotonic()
            findings = watchdog.find_overdue(session, now=NOW, limits=limits)
            took = time.monotonic() - started
        assert len(findings) == watchdog.MAX_ALARMS_PER_CHECK
        assert [f.alarm_id for f in findings] == list(
            range(raised + 1, raised + watchdog.MAX_ALARMS_PER_CHECK + 1)
        )  # oldest open alarms first
        assert took < 5
    finally:
        engine.dispose()
