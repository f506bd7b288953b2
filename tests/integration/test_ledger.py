"""The ledger on both databases: migrations, the dedupe key under a race, the append-only timeline."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError

from app.ledger.models import Alarm, Base, Event, TimelineEntry
from app.ledger.session import make_engine, make_sessionmaker

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _event(dedupe_key: str, **overrides: object) -> Event:
    values: dict[str, object] = {
        "dedupe_key": dedupe_key,
        "source": "acme-panels",
        "received_at": T0,
        "payload": {"code": "BA"},
    }
    values.update(overrides)
    return Event(**values)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no tables at all."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    import uuid

    from tests.conftest import _pg_connect, _pg_url

    request.getfixturevalue("pg_template")  # skips (or fails under CI) without PostgreSQL
    name = f"ab_empty_{uuid.uuid4().hex[:10]}"
    with _pg_connect() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with _pg_connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    request.addfinalizer(drop)
    return _pg_url(name)


def _schema_matches_models(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([sys.executable, "-m", "alembic", "upgrade", "head"], id="alembic"),
        pytest.param([sys.executable, "-m", "cli", "db", "upgrade"], id="alarm-bridge"),
    ],
)
def test_upgrade_head_creates_the_whole_schema_on_an_empty_database(
    empty_database_url: str, command: list[str]
) -> None:
    env = {**os.environ, "DATABASE_URL": empty_database_url}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    engine = make_engine(empty_database_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert {"events", "alarms", "actions", "timeline_entries", "alembic_version"} <= tables
        assert _schema_matches_models(engine) == []  # migrations and models agree
    finally:
        engine.dispose()


def test_dedupe_key_is_enforced_by_the_database_when_two_writers_race(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []
    lock = threading.Lock()

    def writer() -> None:
        session = sessions()
        try:
            session.add(_event("acme-panels:evt-42"))
            barrier.wait(timeout=10)
            session.commit()
            result = "committed"
        except IntegrityError:
            session.rollback()
            result = "rejected"
        finally:
            session.close()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["committed", "rejected"]
    with sessions() as session:
        count = session.execute(
            select(func.count()).select_from(Event).where(Event.dedupe_key == "acme-panels:evt-42")
        ).scalar_one()
    assert count == 1


def test_timeline_refuses_updates_and_deletes(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        session.add(TimelineEntry(at=T0, kind="test.note", message="first", data={}))
    for statement in ("UPDATE timeline_entries SET message = 'rewritten'", "DELETE FROM timeline_entries"):
        with pytest.raises(DBAPIError, match="append-only"), sessions.begin() as session:
            session.execute(text(statement))
    with sessions() as session:
        assert session.execute(select(TimelineEntry.message)).scalars().all() == ["first"]


def test_times_come_back_as_aware_utc_whatever_zone_went_in(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    montreal_noon = datetime(2026, 11, 23, 7, 0, tzinfo=timezone(timedelta(hours=-5)))
    with sessions.begin() as session:
        session.add(_event("k1", received_at=montreal_noon))
    with sessions() as session:
        stored = session.execute(select(Event.received_at)).scalar_one()
    assert stored == T0
    assert stored.tzinfo is not None and stored.utcoffset() == timedelta(0)


def test_naive_datetimes_are_refused(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    with pytest.raises(StatementError, match="naive datetime"), sessions.begin() as session:
        session.add(_event("k2", received_at=datetime(2026, 11, 23, 12, 0)))  # noqa: DTZ001 - on purpose
        session.flush()


def test_an_unknown_alarm_state_is_refused_by_the_database(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(
            Alarm(
                family="burglary",
                priority="property",
                state="maybe",
                opened_at=T0,
                last_event_at=T0,
            )
        )
        session.flush()


def test_foreign_keys_are_enforced(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(_event("k3", alarm_id=999_999))
        session.flush()


def test_sqlite_ledger_runs_in_wal_mode_with_full_sync(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_a_ledger_holding_history_goes_back_a_revision_and_forward_again(empty_database_url: str) -> None:
    """`alarm-bridge db upgrade --revision 0004...` on a ledger whose timeline points at its events:
    on SQLite a batch downgrade rebuilds the events table, which enforced foreign keys refused."""
    from alembic import command

    from cli.ledger import alembic_config
    from tests.conftest import migrate

    migrate(empty_database_url)
    engine = make_engine(empty_database_url)
    sessions = make_sessionmaker(engine)
    try:
        with sessions.begin() as session:
            alarm = Alarm(family="burglary", priority="property", opened_at=T0, last_event_at=T0)
            session.add(alarm)
            session.flush()
            event = _event("history-1", alarm_id=alarm.id)
            session.add(event)
            session.flush()
            session.add(
                TimelineEntry(alarm_id=alarm.id, event_id=event.id, at=T0, kind="event", message="BA")
            )
        engine.dispose()

        command.downgrade(alembic_config(empty_database_url), "0004")
        command.upgrade(alembic_config(empty_database_url), "head")

        with sessions() as session:
            assert session.execute(select(func.count()).select_from(TimelineEntry)).scalar_one() == 1
            assert session.execute(select(Event.alarm_id)).scalar_one() == alarm.id
        assert _schema_matches_models(engine) == []
        with pytest.raises(IntegrityError), sessions.begin() as session:  # enforced again afterwards
            session.add(_event("history-2", alarm_id=999_999))
            session.flush()
    finally:
        engine.dispose()


def _columns(database_url: str, table: str) -> set[str]:
    engine = make_engine(database_url)
    try:
        return {column["name"] for column in inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


WATCHDOG_MARKS = {"watchdog_lease_mark", "watchdog_due_mark", "watchdog_failing_mark"}


def test_migration_0007_marks_the_lateness_the_watchdog_raised_for_and_goes_back(
    empty_database_url: str,
) -> None:
    """0007 adds one watchdog mark per way a step can be late (NULL on the steps already there: never
    raised), and its downgrade removes them, keeping the steps."""
    from alembic import command

    from cli.ledger import alembic_config

    config = alembic_config(empty_database_url)
    command.upgrade(config, "0006")
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO actions (kind, target, queue, state, due_at, attempts, max_attempts, "
                    "cancellable, idempotency_key, outcome_unknown, params, created_at, updated_at) "
                    "VALUES ('tracktik.create_alarm', 'tracktik', 'default', 'queued', :t, 0, 5, false, "
                    "'k-0007', false, '{}', :t, :t)"
                ),
                {"t": T0},
            )
    finally:
        engine.dispose()
    assert not WATCHDOG_MARKS & _columns(empty_database_url, "actions")

    command.upgrade(config, "0007")
    assert _columns(empty_database_url, "actions") >= WATCHDOG_MARKS
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                text(
                    "SELECT kind, watchdog_lease_mark, watchdog_due_mark, watchdog_failing_mark FROM actions"
                )
            ).one()
            assert tuple(row) == ("tracktik.create_alarm", None, None, None)
    finally:
        engine.dispose()

    command.downgrade(config, "0006")
    assert not WATCHDOG_MARKS & _columns(empty_database_url, "actions")
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as connection:
            assert (
                connection.execute(text("SELECT kind FROM actions")).scalar_one() == "tracktik.create_alarm"
            )
    finally:
        engine.dispose()


def _indexes(database_url: str, table: str) -> set[str]:
    engine = make_engine(database_url)
    try:
        return {str(index["name"]) for index in inspect(engine).get_indexes(table)}
    finally:
        engine.dispose()


def test_migration_0008_keeps_ended_alarms_in_front_of_a_person_and_goes_back(
    empty_database_url: str,
) -> None:
    """0008 adds ``alarms.person_needed_at`` (NULL on the alarms already there: nothing waits) with
    its partial index, and its downgrade removes both, keeping the alarms."""
    from alembic import command

    from cli.ledger import alembic_config

    config = alembic_config(empty_database_url)
    command.upgrade(config, "0007")
    engine = make_engine(empty_database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO alarms (family, priority, state, outcome, event_count, opened_at, "
                    "last_event_at, ended_at, refs) VALUES ('burglary', 'property', 'ended', "
                    "'false_alarm', 1, :t, :t, :t, '{}')"
                ),
                {"t": T0},
            )
    finally:
        engine.dispose()

    command.upgrade(config, "0008")
    assert "ix_alarms_person_needed_at" in _indexes(empty_database_url, "alarms")
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT outcome, person_needed_at FROM alarms")).one() == (
                "false_alarm",
                None,
            )
        assert _schema_matches_models(engine) == []
    finally:
        engine.dispose()

    command.downgrade(config, "0007")
    assert "person_needed_at" not in _columns(empty_database_url, "alarms")
    assert "ix_alarms_person_needed_at" not in _indexes(empty_database_url, "alarms")
    engine = make_engine(empty_database_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT outcome FROM alarms")).scalar_one() == "false_alarm"
    finally:
        engine.dispose()
