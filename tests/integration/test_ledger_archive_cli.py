"""`alarm-bridge ledger archive` as an operator runs it: the cut-off, the export, the default age."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.ledger.models import Alarm, AlarmState, ArchiveRun, utcnow
from app.ledger.session import make_engine, make_sessionmaker

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _run(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "DATABASE_URL": database_url, "LOG_FORMAT": "json", **env}
    return subprocess.run(
        [sys.executable, "-m", "cli", "ledger", "archive", *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _alarms(database_url: str, *ended_days_ago: int) -> list[int]:
    engine = make_engine(database_url)
    now = utcnow()
    try:
        with make_sessionmaker(engine).begin() as session:
            rows = [
                Alarm(
                    family="burglary",
                    priority="property",
                    state=AlarmState.ENDED,
                    outcome="false_alarm",
                    opened_at=now - timedelta(days=days),
                    last_event_at=now - timedelta(days=days),
                    ended_at=now - timedelta(days=days),
                )
                for days in ended_days_ago
            ]
            session.add_all(rows)
            session.flush()
            return [row.id for row in rows]
    finally:
        engine.dispose()


def _count(database_url: str, model: type[Alarm] | type[ArchiveRun]) -> int:
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            return int(session.execute(select(func.count()).select_from(model)).scalar_one())
    finally:
        engine.dispose()


def test_archive_exports_and_removes_what_ended_before_the_age_given(sqlite_url: str, tmp_path: Path) -> None:
    old, _recent = _alarms(sqlite_url, 400, 30)
    done = _run(sqlite_url, "--ended-before", "180d", "--export", str(tmp_path / "archive"))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["alarms"], report["alarm_ids"]) == (1, [old, old])
    export = Path(report["export"])
    assert [json.loads(line)["alarm"]["id"] for line in export.read_text().splitlines()] == [old]
    assert _count(sqlite_url, Alarm) == 1
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [line["alarms"] for line in logged if line.get("event") == "ledger.archived"] == [1]


def test_without_an_age_the_setting_decides(sqlite_url: str) -> None:
    _alarms(sqlite_url, 400, 30)
    done = _run(sqlite_url, ARCHIVE_AFTER_DAYS="500")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["alarms"] == 0
    done = _run(sqlite_url, ARCHIVE_AFTER_DAYS="7")
    assert json.loads(done.stdout)["alarms"] == 2
    assert _count(sqlite_url, ArchiveRun) == 2


@pytest.mark.parametrize("age", ["2h", "0d", "nan", "soon", "inf", "1e400d", "99999999d"])
def test_an_age_under_a_day_or_not_an_age_is_refused_and_nothing_is_touched(
    sqlite_url: str, age: str
) -> None:
    _alarms(sqlite_url, 400)
    done = _run(sqlite_url, "--ended-before", age)
    assert done.returncode == 2
    assert "--ended-before" in done.stderr or age in done.stderr
    assert _count(sqlite_url, Alarm) == 1


def test_a_default_age_beyond_100_years_is_refused_in_one_line(sqlite_url: str) -> None:
    _alarms(sqlite_url, 400)
    done = _run(sqlite_url, ARCHIVE_AFTER_DAYS="1e300")
    assert done.returncode == 1
    assert done.stderr.strip().startswith("alarm-bridge: invalid configuration:")
    assert "ARCHIVE_AFTER_DAYS" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert _count(sqlite_url, Alarm) == 1


def test_an_export_directory_that_cannot_be_made_is_refused_before_anything_is_removed(
    sqlite_url: str, tmp_path: Path
) -> None:
    _alarms(sqlite_url, 400)
    (tmp_path / "a-file").write_text("")
    done = _run(sqlite_url, "--ended-before", "180d", "--export", str(tmp_path / "a-file" / "x"))
    assert done.returncode == 2
    assert "--export" in done.stderr
    assert "Traceback" not in done.stderr
    assert _count(sqlite_url, Alarm) == 1


def test_db_upgrade_against_an_unreachable_ledger_says_so_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli", "db", "upgrade"],
        cwd=REPO,
        env={**os.environ, "DATABASE_URL": "postgresql://nobody:hunter2@127.0.0.1:1/none"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: cannot migrate the ledger at postgresql")
    assert "hunter2" not in done.stderr
