"""Named read queries for the operator API and ``/metrics``: views never build queries themselves."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, case, func, literal, select, union_all
from sqlalchemy.orm import Session

from app.ledger.enums import ACTIVE_ALARM_STATES, LIVE_ACTION_STATES, ActionState, AlarmState, Priority
from app.ledger.models import AccountSupervision, Action, Alarm, ArchiveRun, Event, TimelineEntry

LIFE_SAFETY = Priority.LIFE_SAFETY.value
# Ended alarms a person must still act on (a responder to recall by hand, a step to check): they stay
# on the queue and the needs-a-person list until acknowledged. Only an ended alarm has one (the
# column's rule), and the condition is the partial index's own, so every read of them is a walk of
# that index's few rows: with any other condition beside it, SQLite without statistics chose to walk
# a year of alarms instead.
ENDED_NEEDING_PERSON = Alarm.person_needed_at.is_not(None)


def _ended_needing_person(session: Session) -> list[int]:
    """The ids of the ended alarms a person must still act on (few: each waits for an acknowledge)."""
    return list(session.execute(select(Alarm.id).where(ENDED_NEEDING_PERSON)).scalars())


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def action_view(session: Session, action_id: int) -> dict[str, Any] | None:
    """One action as the operator API shows it, with its timeline lines; None if absent."""
    action = session.get(Action, action_id)
    if action is None:
        return None
    lines = session.execute(
        select(TimelineEntry).where(TimelineEntry.action_id == action_id).order_by(TimelineEntry.id)
    ).scalars()
    return {
        **_action(action),
        "alarm_id": action.alarm_id,
        "completed_at": _iso(action.completed_at),
        "result": action.result,
        "timeline": [_line(line) for line in lines],
    }


def _action(action: Action) -> dict[str, Any]:
    return {
        "id": action.id,
        "kind": action.kind,
        "queue": action.queue,
        "state": action.state,
        "due_at": _iso(action.due_at),
        "attempts": action.attempts,
        "cancellable": action.cancellable,
        "external_id": action.external_id,
        "last_error": action.last_error,
    }


def _line(line: TimelineEntry) -> dict[str, Any]:
    return {
        "at": _iso(line.at),
        "kind": line.kind,
        "what": line.message,
        "action_id": line.action_id,
        "event_id": line.event_id,
    }


def _alarm_summary(alarm: Alarm) -> dict[str, Any]:
    return {
        "id": alarm.id,
        "state": alarm.state,
        "outcome": alarm.outcome,
        "site": alarm.site_key,
        "source": alarm.source_key,
        "account": alarm.account,
        "zone": alarm.zone,
        "code": alarm.code,
        "description": alarm.description,
        "family": alarm.family,
        "priority": alarm.priority,
        "routed": alarm.site_key is not None,
        "needs_person": alarm.needs_person,
        "needs_person_reason": alarm.needs_person_reason,
        "verification": alarm.verification,
        "event_count": alarm.event_count,
        "opened_at": _iso(alarm.opened_at),
        "last_event_at": _iso(alarm.last_event_at),
        "restored_at": _iso(alarm.restored_at),
        "verified_at": _iso(alarm.verified_at),
        "acknowledged_at": _iso(alarm.acknowledged_at),
        "ended_at": _iso(alarm.ended_at),
        "panel_cancelled_at": _iso(alarm.panel_cancelled_at),
        "refs": alarm.refs,
    }


def list_alarms(
    session: Session,
    *,
    states: tuple[str, ...] | None = ACTIVE_ALARM_STATES,
    ended_needing_person: bool = False,
    site: str | None = None,
    priority: str | None = None,
    unrouted: bool | None = None,
    needs_person: bool | None = None,
    opened_after: datetime | None = None,
    opened_before: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Alarms for the queue: life-safety first, then oldest first.

    ``ended_needing_person``: with ``states``, also the ended alarms a person must still act on
    (``ENDED_NEEDING_PERSON``, read first by their ids). Read as index walks (life-safety, then the
    rest; for each, the alarms in ``states``, then those ended ones by id), each in (opened_at, id)
    order and stopped at the page's end, instead of sorting every alarm ever stored by a computed
    rank: the cost follows the page, not a year of history.
    """
    filters: list[Any] = []
    wanted: list[Any] = [None]
    if states is not None:
        wanted = [Alarm.state.in_(states)]
        if ended_needing_person and AlarmState.ENDED not in states and needs_person is not False:
            waiting = _ended_needing_person(session)
            wanted += [Alarm.id.in_(waiting)] if waiting else []
    if site is not None:
        filters.append(Alarm.site_key == site)
    if unrouted is not None:
        filters.append(Alarm.site_key.is_(None) if unrouted else Alarm.site_key.is_not(None))
    if needs_person is not None:
        filters.append(Alarm.needs_person if needs_person else ~Alarm.needs_person)
    if opened_after is not None:
        filters.append(Alarm.opened_at >= opened_after)
    if opened_before is not None:
        filters.append(Alarm.opened_at < opened_before)
    window = limit + offset
    parts = []
    for rank, life_safety in ((0, True), (1, False)):
        if priority is not None:
            if (priority == LIFE_SAFETY) != life_safety:
                continue
            which = Alarm.priority == priority
        else:
            which = Alarm.priority == LIFE_SAFETY if life_safety else Alarm.priority != LIFE_SAFETY
        for state in wanted:
            part = (
                select(Alarm.id, Alarm.opened_at, literal(rank).label("rank"))
                .where(*filters, which, *([] if state is None else [state]))
                .order_by(Alarm.opened_at, Alarm.id)
                .limit(window)
                .subquery()
            )
            parts.append(select(part))
    page = (parts[0] if len(parts) == 1 else union_all(*parts)).subquery()
    ids = session.execute(
        select(page.c.id).order_by(page.c.rank, page.c.opened_at, page.c.id).limit(limit).offset(offset)
    ).scalars().all()  # fmt: skip
    # Then the page's rows by primary key: a join lets the planner hash the whole table instead.
    rows = {a.id: a for a in session.execute(select(Alarm).where(Alarm.id.in_(ids))).scalars()} if ids else {}
    return [_alarm_summary(rows[alarm_id]) for alarm_id in ids]


def alarm_queue(
    session: Session,
    *,
    unrouted: bool | None = None,
    needs_person: bool | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Active alarms, and ended ones a person must still act on, in the order a person should take
    them: by priority (life-safety, property, technical, informational, as Priority declares them),
    then oldest first. Two reads (the active alarms, then the ended ones by the ids their partial
    index holds), merged."""
    filters: list[Any] = []
    if unrouted is not None:
        filters.append(Alarm.site_key.is_(None) if unrouted else Alarm.site_key.is_not(None))
    if needs_person is not None:
        filters.append(Alarm.needs_person if needs_person else ~Alarm.needs_person)
    ranks = {p.value: p.rank for p in Priority}
    rank = case(ranks, value=Alarm.priority, else_=len(Priority))
    wanted: list[ColumnElement[bool]] = [Alarm.state.in_(ACTIVE_ALARM_STATES)]
    waiting = _ended_needing_person(session) if needs_person is not False else []
    if waiting:
        wanted.append(Alarm.id.in_(waiting))
    alarms = [
        alarm
        for which in wanted
        for alarm in session.execute(
            select(Alarm).where(which, *filters).order_by(rank, Alarm.opened_at, Alarm.id).limit(limit)
        ).scalars()
    ]
    alarms.sort(key=lambda a: (ranks.get(a.priority, len(Priority)), a.opened_at, a.id))
    return [_alarm_summary(alarm) for alarm in alarms[:limit]]


def alarm_page(session: Session, alarm_id: int) -> dict[str, Any] | None:
    """``alarm_detail`` and what the dashboard shows beside it: each event's own text, each action's
    target and attempt budget. None if absent."""
    detail = alarm_detail(session, alarm_id)
    if detail is None:
        return None
    events = {e.id: e for e in session.execute(select(Event).where(Event.alarm_id == alarm_id)).scalars()}
    actions = {a.id: a for a in session.execute(select(Action).where(Action.alarm_id == alarm_id)).scalars()}
    for event in detail["events"]:
        event["text"] = _event_text(events[event["event_id"]].payload)
    for action in detail["actions"]:
        row = actions[action["id"]]
        action.update(target=row.target, max_attempts=row.max_attempts, updated_at=_iso(row.updated_at))
    return detail


# Where each sender puts its own words: a panel's `message`, Alta's `description` or `detection`
# (Alta renders an unset template variable as "N/A").
_EVENT_TEXT_FIELDS = ("message", "description", "detection")
_UNSET = frozenset({"", "N/A", "n/a", "NA"})


def _event_text(payload: dict[str, Any]) -> str | None:
    for name in _EVENT_TEXT_FIELDS:
        value = payload.get(name)
        if isinstance(value, str) and value.strip() not in _UNSET:
            return value.strip()
    return None


def one_snapshot(session: Session) -> None:
    """Make a session that has not read yet see the ledger at one moment in all its reads.

    An alarm's page is four reads (the alarm, its events, its actions, its timeline). PostgreSQL's
    default READ COMMITTED gives each its own snapshot, so a worker's commit landing between them
    showed a step succeeded beside an alarm row that did not yet hold what that step wrote, or the
    reverse. REPEATABLE READ gives the whole transaction the first read's snapshot; the pool puts the
    connection's default back when it is returned. SQLite needs nothing: every transaction here
    begins IMMEDIATE, so no commit lands inside it."""
    if not session.in_transaction() and session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def alarm_detail(session: Session, alarm_id: int) -> dict[str, Any] | None:
    """One alarm with its events, actions and timeline, all as of one moment; None if absent."""
    one_snapshot(session)
    alarm = session.get(Alarm, alarm_id)
    if alarm is None:
        return None
    events = session.execute(select(Event).where(Event.alarm_id == alarm_id).order_by(Event.id)).scalars()
    actions = session.execute(select(Action).where(Action.alarm_id == alarm_id).order_by(Action.id)).scalars()
    lines = session.execute(
        select(TimelineEntry).where(TimelineEntry.alarm_id == alarm_id).order_by(TimelineEntry.id)
    ).scalars()
    return {
        **_alarm_summary(alarm),
        "events": [
            {
                "event_id": e.id,
                "source": e.source,
                "code": e.code,
                "zone": e.zone,
                "received_at": _iso(e.received_at),
                "occurred_at": _iso(e.occurred_at),
                "clock_skew_s": e.clock_skew_s,
            }
            for e in events
        ],
        "actions": [_action(a) for a in actions],
        "timeline": [_line(line) for line in lines],
    }


def list_actions(
    session: Session, *, states: tuple[str, ...], limit: int = 100, offset: int = 0
) -> list[dict[str, Any]]:
    """Actions in the given states, newest first: with ``failed`` this is the dead-letter view."""
    rows = session.execute(
        select(Action).where(Action.state.in_(states)).order_by(Action.updated_at.desc(), Action.id.desc())
        .limit(limit).offset(offset)
    ).scalars()  # fmt: skip
    return [{**_action(a), "alarm_id": a.alarm_id, "updated_at": _iso(a.updated_at)} for a in rows]


def supervised_accounts(session: Session, *, limit: int = 200) -> list[dict[str, Any]]:
    """Each supervised account's link as the ledger knows it: accounts in trouble first, then the
    others by source and account. Two short reads: the accounts with an open outage (through their
    partial indexes), then one page of the rest (in the unique index's order)."""
    table = AccountSupervision
    supervised = (table.link_period_s.is_not(None)) | (table.test_period_s.is_not(None))
    in_trouble = (table.link_alarm_id.is_not(None)) | (table.test_alarm_id.is_not(None))
    order = (table.source_key, table.account)
    troubled = list(session.execute(select(table).where(in_trouble).order_by(*order).limit(limit)).scalars())
    rest: Iterable[AccountSupervision] = (
        session.execute(
            select(table).where(supervised, ~in_trouble).order_by(*order).limit(limit - len(troubled))
        ).scalars()
        if len(troubled) < limit
        else []
    )
    return [_supervised_account(row) for row in [*troubled, *rest]]


def _supervised_account(row: AccountSupervision) -> dict[str, Any]:
    if row.link_alarm_id is not None and row.test_alarm_id is not None:
        state = "link_silent_and_test_missed"
    elif row.link_alarm_id is not None:
        state = "link_silent"
    elif row.test_alarm_id is not None:
        state = "test_missed"
    elif row.link_period_s is None and row.test_period_s is None:
        state = "not_supervised"
    else:
        state = "ok"
    return {
        "site": row.site_key,
        "source": row.source_key,
        "account": row.account,
        "state": state,
        "supervised_since": _iso(row.supervised_since),
        "last_contact_at": _iso(row.last_contact_at),
        "last_link_at": _iso(row.last_link_at),
        "last_test_at": _iso(row.last_test_at),
        "link_period_s": row.link_period_s,
        "link_deadline_at": _iso(row.link_deadline_at),
        "link_alarm_id": row.link_alarm_id,
        "test_period_s": row.test_period_s,
        "test_deadline_at": _iso(row.test_deadline_at),
        "test_alarm_id": row.test_alarm_id,
    }


# What /metrics reads of the ledger on a scrape. Each read covers live rows only, through an index
# that leads with the state (or a partial index): history is counted by counters, never re-counted
# per scrape, so the cost stays flat however long the ledger has been running.


class OpenAlarms(NamedTuple):
    """How many active alarms share a family, a priority and whether a site claims them."""

    family: str
    priority: str
    routed: bool
    total: int


class ArchivedRows(NamedTuple):
    """Rows ``alarm-bridge ledger archive`` has exported and removed, over all its runs."""

    alarms: int
    events: int
    actions: int
    timeline_entries: int


def open_alarm_counts(session: Session) -> list[OpenAlarms]:
    """Active alarms counted by family, priority and routed (a site claims them) or not."""
    rows = session.execute(
        select(Alarm.family, Alarm.priority, Alarm.site_key.is_not(None), func.count())
        .where(Alarm.state.in_(ACTIVE_ALARM_STATES))
        .group_by(Alarm.family, Alarm.priority, Alarm.site_key.is_not(None))
    ).all()
    return [OpenAlarms(family, priority, bool(routed), count) for family, priority, routed, count in rows]


def alarms_needing_person(session: Session) -> int:
    """Alarms flagged for a person: active ones, and ended ones a person must still act on (each
    counted through its own index)."""
    return sum(
        session.execute(select(func.count()).where(which)).scalar_one()
        for which in (Alarm.state == AlarmState.NEEDS_PERSON, ENDED_NEEDING_PERSON)
    )


def live_action_counts(session: Session) -> dict[str, int]:
    """Live actions (pending, queued, running) counted by state; a state with none is absent."""
    rows = session.execute(
        select(Action.state, func.count()).where(Action.state.in_(LIVE_ACTION_STATES)).group_by(Action.state)
    ).all()
    return {state: count for state, count in rows}


def overdue_action_count(session: Session, *, due_before: datetime) -> int:
    """Steps not yet running whose due time is before ``due_before``."""
    return session.execute(
        select(func.count()).where(
            Action.state.in_((ActionState.PENDING, ActionState.QUEUED)), Action.due_at < due_before
        )
    ).scalar_one()


def oldest_open_alarm_opened_at(session: Session) -> datetime | None:
    """When the oldest alarm not yet ended was opened; None when none is open."""
    return session.execute(
        select(func.min(Alarm.opened_at)).where(Alarm.state.in_(ACTIVE_ALARM_STATES))
    ).scalar_one()


def archived_rows(session: Session) -> ArchivedRows:
    """Every archive run's rows added up (one row per run, a few a week: cheap for decades)."""
    totals = session.execute(
        select(
            func.coalesce(func.sum(ArchiveRun.alarms), 0),
            func.coalesce(func.sum(ArchiveRun.events), 0),
            func.coalesce(func.sum(ArchiveRun.actions), 0),
            func.coalesce(func.sum(ArchiveRun.timeline_entries), 0),
        )
    ).one()
    return ArchivedRows(*(int(total) for total in totals))  # PostgreSQL's SUM is a numeric


def last_archive_finished_at(session: Session) -> datetime | None:
    """When the latest archive run finished; None when none has run."""
    return session.execute(
        select(ArchiveRun.finished_at).order_by(ArchiveRun.id.desc()).limit(1)
    ).scalar_one_or_none()


def supervision_troubles(session: Session) -> dict[str, int]:
    """Supervised accounts with an open outage, by kind (``link``, ``test``), each read through its
    partial index."""
    return {
        kind: session.execute(select(func.count()).where(column.is_not(None))).scalar_one()
        for kind, column in (
            ("link", AccountSupervision.link_alarm_id),
            ("test", AccountSupervision.test_alarm_id),
        )
    }
