"""Letting old alarms go: export what ended long ago, then delete it in small batches.

A monitoring centre keeps the bridge for years; the ledger must not. ``archive()`` removes alarms
that ended before a cut-off, with their events, actions and timeline, plus the old events that
opened no alarm and finished system steps (self-tests). Rules:

- Never an alarm that has not ended, never one with a step still pending, queued or running (a late
  stand-down may still be on its way), never one a person must still act on (``person_needed_at``),
  never a row another kept alarm's timeline points at.
- Each batch is its own short transaction: rows are locked only while they are deleted, and on
  PostgreSQL an alarm someone holds (``FOR UPDATE SKIP LOCKED``) is left for the next run.
- With an export directory, each batch is written (JSON lines) and flushed to disk before the rows
  are deleted: what left the ledger is in the file. A crash between the two leaves the rows in the
  ledger and their lines in the file; the next run exports them again.
- The timeline stays append-only for everyone else: the delete runs under a purge permit that only
  this transaction can see (migration 0002).
- Each run is recorded in ``archive_runs`` (what ``/metrics`` reports) and in one log line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import structlog
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    delete,
    exists,
    insert,
    or_,
    select,
    text,
    tuple_,
)

from app.ledger.models import (
    LIVE_ACTION_STATES,
    Action,
    Alarm,
    AlarmState,
    ArchiveRun,
    Event,
    TimelineEntry,
    TimelinePurgePermit,
    utcnow,
)

log = structlog.get_logger(__name__)

ALARMS: Table = Alarm.__table__
EVENTS: Table = Event.__table__
ACTIONS: Table = Action.__table__
TIMELINE: Table = TimelineEntry.__table__
PERMITS: Table = TimelinePurgePermit.__table__
LIVE = [state.value for state in LIVE_ACTION_STATES]
DEFAULT_BATCH_SIZE = 500


@dataclass
class ArchiveReport:
    """What one run removed (and exported)."""

    ended_before: datetime
    started_at: datetime
    alarms: int = 0
    events: int = 0
    actions: int = 0
    timeline_entries: int = 0
    batches: int = 0
    kept_referenced: int = 0  # alarms left because a kept alarm's timeline points at them
    first_alarm_id: int | None = None
    last_alarm_id: int | None = None
    oldest_ended_at: datetime | None = None
    newest_ended_at: datetime | None = None
    export_path: str | None = None
    finished_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        """The report as the CLI prints it and the log line carries it."""
        return {
            "ended_before": self.ended_before.isoformat(),
            "alarms": self.alarms,
            "events": self.events,
            "actions": self.actions,
            "timeline_entries": self.timeline_entries,
            "batches": self.batches,
            "kept_referenced": self.kept_referenced,
            "alarm_ids": [self.first_alarm_id, self.last_alarm_id],
            "ended_between": [_iso(self.oldest_ended_at), _iso(self.newest_ended_at)],
            "export": self.export_path,
        }


def archive(
    engine: Engine,
    *,
    ended_before: datetime,
    export_dir: Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    pause_s: float = 0.0,
    now: Callable[[], datetime] = utcnow,
) -> ArchiveReport:
    """Export and delete what ended before ``ended_before``; returns (and records) what it removed."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    report = ArchiveReport(ended_before=ended_before, started_at=now())
    out: IO[str] | None = None
    if export_dir is not None:
        export_dir.mkdir(parents=True, exist_ok=True)
        stamp = report.started_at.strftime("%Y%m%dT%H%M%S%fZ")
        path = export_dir / f"alarm-bridge-archive-{stamp}.jsonl"
        out = path.open("x", encoding="utf-8")  # never overwrite an earlier run's export
        report.export_path = str(path)
    try:
        for step in (_archive_alarm_batch, _archive_event_batch, _archive_system_action_batch):
            after: tuple[Any, ...] | None = None
            while True:
                with engine.begin() as conn:
                    done, after = step(conn, report, out, after, batch_size)
                if done:
                    break
                report.batches += 1
                if pause_s:
                    time.sleep(pause_s)  # let intake and the workers in between batches
    finally:
        if out is not None:
            out.close()
    report.finished_at = now()
    with engine.begin() as conn:
        conn.execute(
            insert(ArchiveRun.__table__).values(
                started_at=report.started_at,
                finished_at=report.finished_at,
                ended_before=report.ended_before,
                alarms=report.alarms,
                events=report.events,
                actions=report.actions,
                timeline_entries=report.timeline_entries,
                first_alarm_id=report.first_alarm_id,
                last_alarm_id=report.last_alarm_id,
                oldest_ended_at=report.oldest_ended_at,
                newest_ended_at=report.newest_ended_at,
                export_path=report.export_path,
            )
        )
    log.info("ledger.archived", **report.as_dict())
    return report


# -- alarms -------------------------------------------------------------------------------------------


def _archive_alarm_batch(
    conn: Connection, report: ArchiveReport, out: IO[str] | None, after: tuple[Any, ...] | None, size: int
) -> tuple[bool, tuple[Any, ...] | None]:
    """One batch of ended alarms, in (ended_at, id) order; returns (finished, where to go on from)."""
    unfinished = exists().where(ACTIONS.c.alarm_id == ALARMS.c.id, ACTIONS.c.state.in_(LIVE))
    query = (
        select(ALARMS.c.id, ALARMS.c.ended_at)
        .where(
            ALARMS.c.state == AlarmState.ENDED.value,
            ALARMS.c.ended_at < ended_at_param(report.ended_before),
            ALARMS.c.person_needed_at.is_(None),  # a person must still act on it: kept
            ~unfinished,
        )
        .order_by(ALARMS.c.ended_at, ALARMS.c.id)
        .limit(size)
    )
    if after is not None:
        query = query.where(tuple_(ALARMS.c.ended_at, ALARMS.c.id) > tuple_(*after))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    candidates = conn.execute(query).all()
    if not candidates:
        return True, None
    ids = _without_referenced(conn, {row.id for row in candidates})
    report.kept_referenced += len(candidates) - len(ids)  # each is visited once per run (keyset)
    last = (candidates[-1].ended_at, candidates[-1].id)
    if not ids:
        return False, last
    ordered = sorted(ids)
    alarms = _rows(conn, select(ALARMS).where(ALARMS.c.id.in_(ordered)).order_by(ALARMS.c.id))
    events = _rows(conn, select(EVENTS).where(EVENTS.c.alarm_id.in_(ordered)).order_by(EVENTS.c.id))
    actions = _rows(conn, select(ACTIONS).where(ACTIONS.c.alarm_id.in_(ordered)).order_by(ACTIONS.c.id))
    event_ids = [e["id"] for e in events]
    action_ids = [a["id"] for a in actions]
    lines = _rows(
        conn, select(TIMELINE).where(_timeline_of(ordered, event_ids, action_ids)).order_by(TIMELINE.c.id)
    )
    if out is not None:
        _write(out, _alarm_records(alarms, events, actions, lines))
    _purge(conn, ordered, event_ids, action_ids)
    report.alarms += len(alarms)
    report.events += len(events)
    report.actions += len(actions)
    report.timeline_entries += len(lines)
    first, newest = min(ordered), max(ordered)
    report.first_alarm_id = first if report.first_alarm_id is None else min(report.first_alarm_id, first)
    report.last_alarm_id = newest if report.last_alarm_id is None else max(report.last_alarm_id, newest)
    ended = [a["ended_at"] for a in alarms]
    report.oldest_ended_at = min([*ended, *([report.oldest_ended_at] if report.oldest_ended_at else [])])
    report.newest_ended_at = max([*ended, *([report.newest_ended_at] if report.newest_ended_at else [])])
    return False, last


def _alarm_records(
    alarms: list[dict[str, Any]],
    events: list[dict[str, Any]],
    actions: list[dict[str, Any]],
    lines: list[dict[str, Any]],
) -> Iterable[dict[str, Any]]:
    """One export record per alarm: the alarm, its events, its steps and every line about them."""
    records: dict[int, dict[str, Any]] = {
        a["id"]: {"alarm": a, "events": [], "actions": [], "timeline": []} for a in alarms
    }
    owner_of_event = {e["id"]: e["alarm_id"] for e in events}
    owner_of_action = {a["id"]: a["alarm_id"] for a in actions}
    for event in events:
        records[event["alarm_id"]]["events"].append(event)
    for action in actions:
        records[action["alarm_id"]]["actions"].append(action)
    for line in lines:
        owner = line["alarm_id"]
        if owner not in records:  # a line with no alarm of its own, about one of these rows
            owner = owner_of_event.get(line["event_id"]) or owner_of_action.get(line["action_id"])
        records[owner]["timeline"].append(line)
    return records.values()


def _without_referenced(conn: Connection, ids: set[int]) -> set[int]:
    """The alarms of ``ids`` whose events and steps no kept alarm's timeline points at.

    A cancel's event belongs to one alarm while its lines sit on the alarms it stopped: deleting the
    event under a kept alarm's line would break that line, so its alarm waits for a later run.
    """
    while ids:
        keep = list(ids)
        blocked = set(
            conn.execute(
                select(EVENTS.c.alarm_id)
                .join(TIMELINE, TIMELINE.c.event_id == EVENTS.c.id)
                .where(EVENTS.c.alarm_id.in_(keep), TIMELINE.c.alarm_id.is_not(None))
                .where(TIMELINE.c.alarm_id.not_in(keep))
                .union(
                    select(ACTIONS.c.alarm_id)
                    .join(TIMELINE, TIMELINE.c.action_id == ACTIONS.c.id)
                    .where(ACTIONS.c.alarm_id.in_(keep), TIMELINE.c.alarm_id.is_not(None))
                    .where(TIMELINE.c.alarm_id.not_in(keep))
                )
            ).scalars()
        )
        if not blocked:
            return ids
        ids = ids - blocked
    return ids


def _timeline_of(alarm_ids: Sequence[int], event_ids: Sequence[int], action_ids: Sequence[int]) -> Any:
    clauses = [TIMELINE.c.alarm_id.in_(alarm_ids)]
    if event_ids:
        clauses.append(TIMELINE.c.event_id.in_(event_ids))
    if action_ids:
        clauses.append(TIMELINE.c.action_id.in_(action_ids))
    return or_(*clauses)


def _purge(
    conn: Connection,
    alarm_ids: Sequence[int] = (),
    event_ids: Sequence[int] = (),
    action_ids: Sequence[int] = (),
) -> None:
    """Delete in dependency order, the timeline under this transaction's own purge permit."""
    _with_permit(
        conn, lambda: conn.execute(delete(TIMELINE).where(_timeline_of(alarm_ids, event_ids, action_ids)))
    )
    if action_ids:
        conn.execute(delete(ACTIONS).where(ACTIONS.c.id.in_(action_ids)))
    if event_ids:
        conn.execute(delete(EVENTS).where(EVENTS.c.id.in_(event_ids)))
    if alarm_ids:
        conn.execute(delete(ALARMS).where(ALARMS.c.id.in_(alarm_ids)))


def _with_permit(conn: Connection, work: Callable[[], Any]) -> None:
    """Run ``work`` holding a purge permit that no other transaction can see, then give it back."""
    txid = (
        conn.execute(text("SELECT txid_current()")).scalar_one()
        if conn.dialect.name == "postgresql"
        else None
    )
    permit_id = conn.execute(
        insert(PERMITS).values(txid=txid, granted_at=utcnow()).returning(PERMITS.c.id)
    ).scalar_one()
    work()
    conn.execute(delete(PERMITS).where(PERMITS.c.id == permit_id))


# -- events that opened no alarm, and finished system steps -----------------------------------------------


def _archive_event_batch(
    conn: Connection, report: ArchiveReport, out: IO[str] | None, after: tuple[Any, ...] | None, size: int
) -> tuple[bool, tuple[Any, ...] | None]:
    """Old events no alarm took (tests, openings, closings, stray restores), in id order."""
    cutoff = ended_at_param(report.ended_before)
    return _archive_unowned(conn, report, out, after, size, "events", EVENTS.c.received_at < cutoff)


def _archive_system_action_batch(
    conn: Connection, report: ArchiveReport, out: IO[str] | None, after: tuple[Any, ...] | None, size: int
) -> tuple[bool, tuple[Any, ...] | None]:
    """Finished steps that belong to no alarm (self-tests), completed before the cut-off."""
    cutoff = ended_at_param(report.ended_before)
    return _archive_unowned(
        conn,
        report,
        out,
        after,
        size,
        "actions",
        ACTIONS.c.state.not_in(LIVE),
        ACTIONS.c.completed_at < cutoff,
    )


# The rows that may belong to no alarm: their table, the timeline column that points at them, and
# the key of their export record.
_UNOWNED = {
    "events": (EVENTS, TIMELINE.c.event_id, "event"),
    "actions": (ACTIONS, TIMELINE.c.action_id, "action"),
}


def _archive_unowned(
    conn: Connection,
    report: ArchiveReport,
    out: IO[str] | None,
    after: tuple[Any, ...] | None,
    size: int,
    kind: str,
    *conditions: Any,
) -> tuple[bool, tuple[Any, ...] | None]:
    """One batch of ``kind`` rows that belong to no alarm and that no alarm's line points at,
    exported with their own lines and deleted; returns (finished, where to go on from)."""
    table, line_column, record_key = _UNOWNED[kind]
    referenced = exists().where(line_column == table.c.id, TIMELINE.c.alarm_id.is_not(None))
    query = (
        select(table)
        .where(table.c.alarm_id.is_(None), *conditions, ~referenced)
        .order_by(table.c.id)
        .limit(size)
    )
    if after is not None:
        query = query.where(table.c.id > after[0])
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = _rows(conn, query)
    if not rows:
        return True, None
    ids = [row["id"] for row in rows]
    lines = _rows(conn, select(TIMELINE).where(line_column.in_(ids)).order_by(TIMELINE.c.id))
    if out is not None:
        _write(out, ({record_key: row} for row in rows))
        if lines:
            _write(out, ({"timeline": line} for line in lines))
    _purge(conn, **{f"{record_key}_ids": ids})
    setattr(report, kind, getattr(report, kind) + len(ids))
    report.timeline_entries += len(lines)
    return False, (ids[-1],)


# -- helpers ------------------------------------------------------------------------------------------


def ended_at_param(value: datetime) -> Any:
    """A bound aware-UTC cut-off with the ledger's datetime type (naive on SQLite, as stored)."""
    return bindparam(None, value, type_=ALARMS.c.ended_at.type)


def _rows(conn: Connection, query: Any) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in conn.execute(query)]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot export {type(value).__name__}")


def _write(out: IO[str], records: Iterable[dict[str, Any]]) -> None:
    """Append records as JSON lines and make them durable before the rows are deleted."""
    for record in records:
        out.write(json.dumps(record, default=_json_default, ensure_ascii=False, sort_keys=True))
        out.write("\n")
    out.flush()
    os.fsync(out.fileno())
