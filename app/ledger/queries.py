"""Named read queries for the operator API: views never build queries themselves."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from app.ledger.models import Action, Alarm, Event, TimelineEntry


def action_view(session: Session, action_id: int) -> dict[str, Any] | None:
    """One action as the operator API shows it, with its timeline lines; None if absent."""
    action = session.get(Action, action_id)
    if action is None:
        return None
    lines = session.execute(
        select(TimelineEntry).where(TimelineEntry.action_id == action_id).order_by(TimelineEntry.id)
    ).scalars()
    return {
        "id": action.id,
        "alarm_id": action.alarm_id,
        "kind": action.kind,
        "queue": action.queue,
        "state": action.state,
        "attempts": action.attempts,
        "due_at": action.due_at.isoformat(),
        "completed_at": action.completed_at.isoformat() if action.completed_at else None,
        "external_id": action.external_id,
        "last_error": action.last_error,
        "result": action.result,
        "timeline": [
            {"at": line.at.isoformat(), "kind": line.kind, "message": line.message} for line in lines
        ],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _alarm_summary(alarm: Alarm) -> dict[str, Any]:
    return {
        "id": alarm.id,
        "site_key": alarm.site_key,
        "source_key": alarm.source_key,
        "account": alarm.account,
        "zone": alarm.zone,
        "code": alarm.code,
        "description": alarm.description,
        "family": alarm.family,
        "priority": alarm.priority,
        "state": alarm.state,
        "outcome": alarm.outcome,
        "routed": alarm.site_key is not None,
        "needs_person": alarm.needs_person,
        "needs_person_reason": alarm.needs_person_reason,
        "event_count": alarm.event_count,
        "opened_at": _iso(alarm.opened_at),
        "last_event_at": _iso(alarm.last_event_at),
        "restored_at": _iso(alarm.restored_at),
        "closed_at": _iso(alarm.closed_at),
    }


def list_alarms(
    session: Session,
    *,
    state: str | None = None,
    unrouted: bool | None = None,
    needs_person: bool | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Alarms for the queue: life-safety first, then oldest first."""
    query = select(Alarm)
    if state is not None:
        query = query.where(Alarm.state == state)
    if unrouted is not None:
        query = query.where(Alarm.site_key.is_(None) if unrouted else Alarm.site_key.is_not(None))
    if needs_person is not None:
        query = query.where(Alarm.needs_person.is_(needs_person))
    life_safety_first = case((Alarm.priority == "life_safety", 0), else_=1)
    rows = session.execute(
        query.order_by(life_safety_first, Alarm.opened_at, Alarm.id).limit(limit)
    ).scalars()
    return [_alarm_summary(alarm) for alarm in rows]


def alarm_detail(session: Session, alarm_id: int) -> dict[str, Any] | None:
    """One alarm with its events, actions and timeline; None if absent."""
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
                "id": e.id,
                "source": e.source,
                "code": e.code,
                "zone": e.zone,
                "received_at": _iso(e.received_at),
                "occurred_at": _iso(e.occurred_at),
                "clock_skew_s": e.clock_skew_s,
            }
            for e in events
        ],
        "actions": [
            {
                "id": a.id,
                "kind": a.kind,
                "queue": a.queue,
                "state": a.state,
                "due_at": _iso(a.due_at),
                "attempts": a.attempts,
                "cancellable": a.cancellable,
                "external_id": a.external_id,
                "last_error": a.last_error,
            }
            for a in actions
        ],
        "timeline": [
            {
                "at": _iso(t.at),
                "kind": t.kind,
                "message": t.message,
                "action_id": t.action_id,
                "event_id": t.event_id,
            }
            for t in lines
        ],
    }
