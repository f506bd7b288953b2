"""Every hot statement reads live rows or one page, never the history: checked on the plans.

A ledger is seeded with history (old ended alarms, their steps and timeline, routine events that
opened no alarm, all on the account the test then uses), then intake, the operator lists, the
dead-letter view, an action's timeline, /metrics' gauges, the dispatcher and the watchdog run for
real while every statement they send is captured. Supervision too: a large installation's
supervised accounts are seeded, and intake's contact upsert, a DC-09 link note, the tick's "deadline
passed" walk and the dashboard's list must each read through an index. Each captured statement is
then explained:
- PostgreSQL (EXPLAIN ANALYZE, rolled back): no scan node may read more than a small fraction of a
  history table (rows returned plus rows removed by its filter);
- SQLite (EXPLAIN QUERY PLAN): no full scan of a history table.
Without the indexes and statements of migration 0002 the early-restore lookup, the lists in every
state, an action's timeline and the actions gauge each read the whole history (issue 19).
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, text
from sqlalchemy.orm import Session, sessionmaker

from app.domain import actions, supervision, watchdog
from app.domain.events import Event
from app.domain.intake import IntakeRules, record_event
from app.domain.sites import Sites, Supervision
from app.ledger import queries
from app.ledger.models import AccountSupervision, Action, Alarm, TimelineEntry
from app.ledger.models import Event as EventRow
from app.ledger.session import make_sessionmaker
from app.web.metrics import LedgerCollector
from tests.sites_fixture import MONTREAL_ACCOUNT, example_sites

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
HISTORY = 6000  # ended alarms; as many routine events, twice as many steps and timeline lines
MAX_ROWS_READ = HISTORY // 10
HISTORY_TABLES = ("events", "alarms", "actions", "timeline_entries", "account_supervision")
RULES = IntakeRules(grouping_window=timedelta(minutes=5), dedupe_window_s=300)


def _seed(engine: Engine) -> None:
    """A history on the account the test uses: what a year leaves behind, in miniature."""
    start = NOW - timedelta(days=365)
    step = timedelta(days=365) / HISTORY
    with engine.begin() as conn:
        conn.execute(
            insert(Alarm.__table__),
            [
                {
                    "id": i, "site_key": "montreal-hq", "source_key": "acme-panels",
                    "account": MONTREAL_ACCOUNT, "zone": str(i % 8), "code": "FA" if i % 10 == 0 else "BA",
                    "description": "seeded",
                    "family": "fire" if i % 10 == 0 else "burglary",
                    "priority": "life_safety" if i % 10 == 0 else "property", "state": "ended",
                    "outcome": "dispatched", "event_count": 1, "opened_at": start + i * step,
                    "last_event_at": start + i * step, "ended_at": start + i * step + timedelta(minutes=10),
                    "refs": {},
                }
                for i in range(1, HISTORY + 1)
            ],
        )  # fmt: skip
        conn.execute(
            insert(EventRow.__table__),
            [
                {
                    "id": i, "dedupe_key": f"seed:{i}", "source": "acme-panels",
                    "received_at": start + i * step / 2,
                    "account": MONTREAL_ACCOUNT, "zone": str(i % 8), "code": "BA" if i <= HISTORY else "RP",
                    "site_key": "montreal-hq", "payload": {}, "alarm_id": i if i <= HISTORY else None,
                }
                for i in range(1, 2 * HISTORY + 1)
            ],
        )  # fmt: skip
        conn.execute(
            insert(Action.__table__),
            [
                {
                    "id": i, "alarm_id": (i - 1) % HISTORY + 1, "kind": "tracktik.create_alarm",
                    "target": "tracktik", "queue": "default",
                    "state": "failed" if i % 50 == 0 else "succeeded",
                    "due_at": start + i * step / 2, "attempts": 1, "max_attempts": 8, "cancellable": False,
                    "idempotency_key": f"seed-{i}", "outcome_unknown": False, "params": {},
                    "created_at": start + i * step / 2, "updated_at": start + i * step / 2,
                    "completed_at": start + i * step / 2,
                }
                for i in range(1, 2 * HISTORY + 1)
            ],
        )  # fmt: skip
        conn.execute(
            insert(TimelineEntry.__table__),
            [
                {
                    "alarm_id": (i - 1) % HISTORY + 1, "action_id": i, "event_id": None,
                    "at": start + i * step / 2, "kind": "action.succeeded", "message": "seeded", "data": {},
                }
                for i in range(1, 2 * HISTORY + 1)
            ],
        )  # fmt: skip
        # Supervised accounts of a large installation: deadlines spread over the coming year, a few
        # accounts in trouble.
        conn.execute(
            insert(AccountSupervision.__table__),
            [
                {
                    "id": i, "source_key": "acme-panels", "account": f"sv-{i}", "site_key": "montreal-hq",
                    "supervised_since": start, "last_contact_at": NOW - timedelta(minutes=1),
                    "link_period_s": 600, "test_period_s": 90000,
                    "link_deadline_at": None if i % 500 == 0 else NOW + i * step,
                    "test_deadline_at": NOW + i * step, "link_alarm_id": i if i % 500 == 0 else None,
                    "updated_at": NOW,
                }
                for i in range(1, HISTORY + 1)
            ],
        )  # fmt: skip
        if engine.dialect.name == "postgresql":
            for table in (*HISTORY_TABLES,):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 100000)"))
    if engine.dialect.name == "postgresql":  # autovacuum would; nothing analyses a SQLite ledger
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()


@pytest.fixture
def history(engine: Engine) -> tuple[Engine, sessionmaker[Session]]:
    _seed(engine)
    return engine, make_sessionmaker(engine)


def _panel(code: str, zone: str | None, at: datetime) -> Event:
    return Event(
        source_key="acme-panels", source_kind="panel", received_at=at, account=MONTREAL_ACCOUNT,
        code=code, zone=zone, occurred_at=at, payload={"code": code},
    )  # fmt: skip


def _capture(engine: Engine) -> list[tuple[str, Any]]:
    captured: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        head = statement.lstrip().split(None, 1)[0].upper()
        if not many and head in ("SELECT", "UPDATE", "DELETE", "WITH") and "advisory" not in statement:
            captured.append((statement, parameters))

    return captured


def _supervised_sites() -> Sites:
    """The example sites, with Montréal's account supervised."""
    example = example_sites()
    watched = Supervision(link=timedelta(minutes=10), test_interval=timedelta(hours=24))
    return Sites(
        example.sources,
        [replace(s, supervision=watched) if s.key == "montreal-hq" else s for s in example.sites],
    )


def _run_the_hot_paths(sessions: sessionmaker[Session]) -> None:
    sites = _supervised_sites()
    for code, zone, offset in (("BR", "3", 0), ("BA", "3", 1), ("BA", "new-zone", 2), ("BC", "1", 3)):
        with sessions.begin() as session:
            record_event(
                session, _panel(code, zone, NOW + timedelta(seconds=offset)), sites=sites, rules=RULES
            )
    with sessions.begin() as session:
        supervision.note_link(
            session,
            sites=sites,
            source_key="acme-panels",
            account=MONTREAL_ACCOUNT,
            at=NOW + timedelta(seconds=5),
        )
    with sessions.begin() as session:  # a day later: Montréal's link deadline has passed
        supervision.check(session, sites=sites, now=NOW + timedelta(days=1), rules=RULES)
    with sessions.begin() as session:  # the next event restores its trouble
        record_event(
            session, _panel("CL", None, NOW + timedelta(days=1, seconds=1)), sites=sites, rules=RULES
        )
    with sessions() as session:
        for states in (None, ("ended",), ("open", "needs_person")):
            queries.list_alarms(session, states=states, limit=100)
        queries.list_alarms(session, states=None, site="montreal-hq", limit=100)
        queries.list_alarms(session, states=None, needs_person=False, limit=50, offset=50)
        queries.list_alarms(session, states=None, priority="life_safety", limit=100)
        queries.alarm_queue(session)
        queries.alarm_queue(session, needs_person=True)
        queries.list_actions(session, states=("failed",), limit=100)
        queries.action_view(session, 42)
        queries.alarm_page(session, 42)
        queries.supervised_accounts(session)
        limits = watchdog.Limits(grace=timedelta(seconds=60), failing=timedelta(seconds=300))
        watchdog.find_overdue(session, now=NOW, limits=limits)
        actions.collect_for_dispatch(
            session, now=NOW, resend_after=timedelta(seconds=90), limit=500, waiting={}
        )
        session.rollback()
    list(LedgerCollector(sessions, timedelta(seconds=60)).collect())


_PG_SCAN = re.compile(r"(?:Seq|Index|Index Only|Bitmap Heap) Scan (?:\w+ )?(?:using \w+ )?on (\w+)")
_PG_ROWS = re.compile(r"actual time=\S+ rows=(\d+) loops=(\d+)")
_PG_REMOVED = re.compile(r"Rows Removed by (?:Filter|Index Recheck): (\d+)")


def _pg_rows_read(plan: list[str]) -> dict[str, int]:
    """Rows each scan node of a history table read: returned plus filtered out, times its loops."""
    read: dict[str, int] = {}
    for index, line in enumerate(plan):
        scan = _PG_SCAN.search(line)
        rows = _PG_ROWS.search(line)
        if not scan or not rows or scan.group(1) not in HISTORY_TABLES:
            continue
        removed = 0
        for detail in plan[index + 1 :]:
            if "->" in detail:
                break
            if found := _PG_REMOVED.search(detail):
                removed += int(found.group(1))
        loops = int(rows.group(2))
        read[scan.group(1)] = read.get(scan.group(1), 0) + int(rows.group(1)) * loops + removed
    return read


def test_no_hot_statement_reads_the_history(history: tuple[Engine, sessionmaker[Session]]) -> None:
    engine, sessions = history
    captured = _capture(engine)
    _run_the_hot_paths(sessions)
    assert len(captured) > 20
    offenders = []
    with engine.connect() as conn:
        for statement, parameters in captured:
            if engine.dialect.name == "postgresql":
                plan = [row[0] for row in conn.exec_driver_sql(f"EXPLAIN ANALYZE {statement}", parameters)]
                conn.rollback()
                too_many = {t: n for t, n in _pg_rows_read(plan).items() if n > MAX_ROWS_READ}
                if too_many:
                    offenders.append((statement[:300], too_many, "\n".join(plan)))
            else:
                plan = [
                    row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
                ]
                conn.rollback()
                full = [line for line in plan if re.fullmatch(rf"SCAN ({'|'.join(HISTORY_TABLES)})", line)]
                if full:
                    offenders.append((statement[:300], full, "\n".join(plan)))
    assert not offenders, "\n\n".join(f"{sql}\n-> {why}\n{plan}" for sql, why, plan in offenders)
