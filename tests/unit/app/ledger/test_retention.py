"""Retention on both ledgers: what `archive()` removes, what it keeps, its export, its batches, and
the timeline staying append-only for everyone else (TRUNCATE and replica mode included)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from app.domain import actions
from app.ledger.models import (
    Action,
    ActionState,
    Alarm,
    AlarmState,
    ArchiveRun,
    Event,
    TimelineEntry,
)
from app.ledger.retention import archive
from app.ledger.session import make_sessionmaker
from app.web.metrics import LedgerCollector

pytestmark = pytest.mark.unit
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
CUTOFF = NOW - timedelta(days=180)
LONG_AGO = NOW - timedelta(days=200)
LATELY = NOW - timedelta(days=10)


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


class Ledger:
    """Builds alarms with their events, steps and timeline, the way intake and the workers leave them."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.serial = 0

    def alarm(
        self,
        *,
        opened_at: datetime,
        ended_at: datetime | None,
        step_state: ActionState = ActionState.SUCCEEDED,
        events: int = 2,
    ) -> dict[str, Any]:
        with self.sessions.begin() as session:
            alarm = Alarm(
                site_key="hq", source_key="acme-panels", account="1234", zone="3", code="BA",
                family="burglary", priority="property",
                state=AlarmState.ENDED if ended_at else AlarmState.OPEN,
                outcome="dispatched" if ended_at else None,
                opened_at=opened_at, last_event_at=opened_at, ended_at=ended_at,
            )  # fmt: skip
            session.add(alarm)
            session.flush()
            event_ids = [self._event(session, opened_at, alarm.id).id for _ in range(events)]
            step = actions.new_action(
                kind="tracktik.create_alarm", target="tracktik", queue="default",
                due_at=opened_at, max_attempts=5, alarm_id=alarm.id, now=opened_at,
            )  # fmt: skip
            step.state = step_state
            step.completed_at = opened_at if step_state == ActionState.SUCCEEDED else None
            session.add(step)
            session.flush()
            session.add_all(
                [
                    TimelineEntry(alarm_id=alarm.id, event_id=event_ids[0], at=opened_at, kind="alarm.opened",
                                  message="BA Burglary zone 3", data={}),
                    TimelineEntry(alarm_id=alarm.id, action_id=step.id, at=opened_at, kind="action.succeeded",
                                  message="tracktik.create_alarm succeeded", data={}),
                ]
            )  # fmt: skip
            return {"alarm": alarm.id, "events": event_ids, "action": step.id}

    def _event(self, session: Session, at: datetime, alarm_id: int | None, code: str = "BA") -> Event:
        self.serial += 1
        event = Event(
            dedupe_key=f"acme-panels:{self.serial}", source="acme-panels", received_at=at,
            account="1234", zone="3", code=code, payload={"code": code}, alarm_id=alarm_id,
        )  # fmt: skip
        session.add(event)
        session.flush()
        return event

    def routine_event(self, at: datetime) -> int:
        with self.sessions.begin() as session:
            return self._event(session, at, None, code="RP").id

    def selftest(self, completed_at: datetime) -> int:
        with self.sessions.begin() as session:
            step = actions.new_action(
                kind="system.selftest", target="system", queue="default",
                due_at=completed_at, max_attempts=1, alarm_id=None, now=completed_at,
            )  # fmt: skip
            step.state, step.completed_at = ActionState.SUCCEEDED, completed_at
            session.add(step)
            session.flush()
            session.add(
                TimelineEntry(action_id=step.id, at=completed_at, kind="selftest.ok", message="ok", data={})
            )
            return step.id


def _ids(session: Session, model: Any) -> set[int]:
    return set(session.execute(select(model.id)).scalars())


def test_archive_removes_what_ended_before_the_cutoff_and_keeps_everything_else(
    engine: Engine, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    ledger = Ledger(sessions)
    old = ledger.alarm(opened_at=LONG_AGO, ended_at=LONG_AGO + timedelta(minutes=10))
    old_too = ledger.alarm(opened_at=LONG_AGO, ended_at=LONG_AGO + timedelta(minutes=20), events=1)
    recent = ledger.alarm(opened_at=LATELY, ended_at=LATELY)
    still_open = ledger.alarm(opened_at=LONG_AGO, ended_at=None)
    unfinished = ledger.alarm(
        opened_at=LONG_AGO, ended_at=LONG_AGO + timedelta(minutes=5), step_state=ActionState.QUEUED
    )
    old_test = ledger.routine_event(LONG_AGO)
    recent_test = ledger.routine_event(LATELY)
    old_selftest = ledger.selftest(LONG_AGO)
    recent_selftest = ledger.selftest(LATELY)

    report = archive(engine, ended_before=CUTOFF, export_dir=tmp_path, batch_size=1, now=lambda: NOW)

    with sessions() as session:
        assert _ids(session, Alarm) == {recent["alarm"], still_open["alarm"], unfinished["alarm"]}
        kept_events = _ids(session, Event)
        kept_actions = _ids(session, Action)
        kept_lines = session.execute(select(TimelineEntry.alarm_id, TimelineEntry.action_id)).all()
        run = session.execute(select(ArchiveRun)).scalar_one()
    assert kept_events == {
        *recent["events"], *still_open["events"], *unfinished["events"], recent_test
    }  # fmt: skip
    assert old_test not in kept_events
    assert kept_actions == {recent["action"], still_open["action"], unfinished["action"], recent_selftest}
    assert {alarm for alarm, _ in kept_lines} == {
        recent["alarm"], still_open["alarm"], unfinished["alarm"], None
    }  # fmt: skip
    assert (None, recent_selftest) in kept_lines and (None, old_selftest) not in kept_lines
    # 2 alarms (3 events, 2 steps, 4 lines) + 1 routine event + 1 self-test (1 line), one per batch.
    assert (report.alarms, report.events, report.actions, report.timeline_entries) == (2, 4, 3, 5)
    assert report.batches == 4
    assert (run.alarms, run.events, run.actions, run.timeline_entries) == (2, 4, 3, 5)
    assert (run.first_alarm_id, run.last_alarm_id) == (old["alarm"], old_too["alarm"])
    assert run.oldest_ended_at == LONG_AGO + timedelta(minutes=10)

    export = Path(report.export_path or "")
    assert export.parent == tmp_path
    records = [json.loads(line) for line in export.read_text().splitlines()]
    alarms = [r for r in records if "alarm" in r]
    assert [a["alarm"]["id"] for a in alarms] == [old["alarm"], old_too["alarm"]]
    first = alarms[0]
    assert [e["id"] for e in first["events"]] == old["events"]
    assert [a["id"] for a in first["actions"]] == [old["action"]]
    assert [line["kind"] for line in first["timeline"]] == ["alarm.opened", "action.succeeded"]
    assert first["alarm"]["ended_at"].startswith("2026-05-")
    assert [r["event"]["id"] for r in records if "event" in r] == [old_test]
    assert [r["action"]["id"] for r in records if "action" in r] == [old_selftest]


def test_a_second_run_finds_nothing_and_never_overwrites_an_export(
    engine: Engine, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    exports = tmp_path / "exports"
    Ledger(sessions).alarm(opened_at=LONG_AGO, ended_at=LONG_AGO)
    first = archive(engine, ended_before=CUTOFF, export_dir=exports, now=lambda: NOW)
    second = archive(engine, ended_before=CUTOFF, export_dir=exports, now=lambda: NOW + timedelta(seconds=1))
    assert (first.alarms, second.alarms, second.events, second.batches) == (1, 0, 0, 0)
    assert first.export_path != second.export_path
    assert len(list(exports.iterdir())) == 2
    with pytest.raises(FileExistsError):  # same instant: refused before anything is read or deleted
        archive(engine, ended_before=CUTOFF, export_dir=exports, now=lambda: NOW)
    assert Path(first.export_path or "").read_text().count("\n") == 1


def test_an_alarm_whose_event_a_kept_alarm_points_at_waits_for_it(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    """A cancel's event belongs to one alarm while its line sits on the alarm it stopped."""
    ledger = Ledger(sessions)
    cancelled = ledger.alarm(opened_at=LONG_AGO, ended_at=LONG_AGO + timedelta(minutes=1))
    stopper = ledger.alarm(opened_at=LONG_AGO, ended_at=None)  # still open: kept
    with sessions.begin() as session:
        session.add(
            TimelineEntry(alarm_id=stopper["alarm"], event_id=cancelled["events"][1], at=LONG_AGO,
                          kind="alarm.cancelled_by_user", message="BC within the cancel window", data={})
        )  # fmt: skip

    report = archive(engine, ended_before=CUTOFF, now=lambda: NOW)
    assert (report.alarms, report.kept_referenced) == (0, 1)

    with sessions.begin() as session:
        alarm = session.get_one(Alarm, stopper["alarm"])
        alarm.state, alarm.outcome, alarm.ended_at = AlarmState.ENDED, "cancelled", LONG_AGO
    report = archive(engine, ended_before=CUTOFF, now=lambda: NOW)
    assert (report.alarms, report.kept_referenced) == (2, 0)
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(TimelineEntry)).scalar_one() == 0


def test_an_ended_alarm_a_person_must_still_act_on_is_kept_until_acknowledged(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    """A guard's dispatch landed after the End: the alarm waits on the needs-a-person list, so the
    archive leaves it there; once acknowledged it goes like any other."""
    waiting = Ledger(sessions).alarm(opened_at=LONG_AGO, ended_at=LONG_AGO + timedelta(minutes=1))
    with sessions.begin() as session:
        session.get_one(Alarm, waiting["alarm"]).person_needed_at = LONG_AGO + timedelta(minutes=2)

    assert archive(engine, ended_before=CUTOFF, now=lambda: NOW).alarms == 0

    with sessions.begin() as session:
        session.get_one(Alarm, waiting["alarm"]).person_needed_at = None
    assert archive(engine, ended_before=CUTOFF, now=lambda: NOW + timedelta(seconds=1)).alarms == 1


def test_the_timeline_stays_append_only_for_everyone_but_the_retention_path(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    Ledger(sessions).alarm(opened_at=LONG_AGO, ended_at=LONG_AGO)
    refused = ["DELETE FROM timeline_entries", "UPDATE timeline_entries SET message = 'rewritten'"]
    if engine.dialect.name == "postgresql":
        refused.append("TRUNCATE timeline_entries CASCADE")
    for statement in refused:
        with pytest.raises(DBAPIError, match="append-only"), sessions.begin() as session:
            session.execute(text(statement))
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(TimelineEntry)).scalar_one() == 2


def test_postgresql_replica_mode_and_a_stale_permit_do_not_open_the_timeline(
    postgres_url: str,
) -> None:
    from app.ledger.session import make_engine

    engine = make_engine(postgres_url)
    sessions = make_sessionmaker(engine)
    try:
        Ledger(sessions).alarm(opened_at=LONG_AGO, ended_at=LONG_AGO)
        with sessions.begin() as session:  # a permit committed by hand names another transaction
            session.execute(text("INSERT INTO timeline_purge_permits (txid, granted_at) VALUES (1, now())"))
        with pytest.raises(DBAPIError, match="append-only"), sessions.begin() as session:
            session.execute(text("SET LOCAL session_replication_role = replica"))
            session.execute(text("DELETE FROM timeline_entries"))
        with sessions() as session:
            assert session.execute(select(func.count()).select_from(TimelineEntry)).scalar_one() == 2
    finally:
        engine.dispose()


def test_metrics_count_live_steps_and_what_retention_removed(
    engine: Engine, sessions: sessionmaker[Session]
) -> None:
    ledger = Ledger(sessions)
    ledger.alarm(opened_at=LONG_AGO, ended_at=LONG_AGO)
    ledger.alarm(opened_at=LATELY, ended_at=None, step_state=ActionState.QUEUED)
    archive(engine, ended_before=CUTOFF, now=lambda: NOW)

    families = {f.name: f for f in LedgerCollector(sessions, timedelta(seconds=60)).collect()}
    actions_gauge = {s.labels["state"]: s.value for s in families["alarm_bridge_actions"].samples}
    assert actions_gauge == {"pending": 0, "queued": 1, "running": 0}  # history is not re-counted
    archived = {
        s.labels["kind"]: s.value
        for s in families["alarm_bridge_ledger_archived"].samples
        if s.name.endswith("_total")
    }
    assert archived == {"alarms": 1, "events": 2, "actions": 1, "timeline_entries": 2}
    (last,) = families["alarm_bridge_ledger_last_archive_timestamp_seconds"].samples
    assert last.value == NOW.timestamp()
