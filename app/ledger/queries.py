"""Named read queries for the operator API: views never build queries themselves."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.ledger.models import Action, TimelineEntry


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
