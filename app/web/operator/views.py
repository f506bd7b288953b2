"""Operator views: thin glue from HTTP to the domain and the named queries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import marshmallow as ma
from flask import request
from sqlalchemy.orm import Session

from app.domain import operations
from app.domain.actions import DueAction
from app.domain.selftest import plan_selftest
from app.ledger import queries
from app.ledger.models import ACTIVE_ALARM_STATES, AlarmState, utcnow
from app.web.auth import require_operator
from app.web.bodies import optional_json_object
from app.web.errors import ApiError
from app.web.openapi import OPERATOR, operation
from app.web.operator import bp
from app.web.operator.schemas import (
    LEDGER_ID_MAX,
    ActionListQuerySchema,
    ActionListSchema,
    ActionViewSchema,
    AlarmDetailSchema,
    AlarmListQuerySchema,
    AlarmListSchema,
    EmptySchema,
    EndRequestSchema,
    SelftestReceiptSchema,
    SelftestRequestSchema,
    VerifyRequestSchema,
)
from app.web.services import services

LEDGER_ID = f"int(max={LEDGER_ID_MAX})"  # a larger id is a 404 from the router, not a database error
# What a command may answer besides its result: a body is optional, but when sent it is JSON.
COMMAND_ERRORS = (400, 401, 404, 409, 413, 415, 422, 503)
View = TypeVar("View", bound=Callable[..., object])


def _alarm_command(
    summary: str, body: type[ma.Schema] | None = None, *, ended: str = "the alarm has ended"
) -> Callable[[View], View]:
    """The operation of a command on one alarm: each answers the alarm as it is after it."""
    return operation(
        summary,
        security=OPERATOR,
        body=body,
        ok={200: ("the alarm after the command (as GET /v1/alarms/{alarm_id})", AlarmDetailSchema)},
        errors=COMMAND_ERRORS,
        error_text={
            404: "no such alarm",
            409: ended,
            422: "invalid fields (acknowledge takes none), each named in `fields`",
        },
    )


@bp.post("/system/selftest")
@operation(
    "Send a self-test through broker and worker (operator key)",
    security=OPERATOR,
    body=SelftestRequestSchema,
    ok={202: ("sent: poll `status_url`", SelftestReceiptSchema)},
    errors=(400, 401, 413, 415, 422, 503),
)
@require_operator
def request_selftest() -> tuple[dict[str, Any], int]:
    """Send a self-test through the broker to a worker; poll its action to see it complete."""
    params = SelftestRequestSchema().load(optional_json_object())
    svc = services()
    with svc.sessions.begin() as session:
        due = plan_selftest(session, now=utcnow(), queue=params["queue"])
    svc.outbox.publish([due])
    return {"action_id": due.id, "queue": due.queue, "status_url": f"/v1/system/selftest/{due.id}"}, 202


@bp.get(f"/system/selftest/<{LEDGER_ID}:action_id>")
@operation(
    "The self-test action: state, attempts, the worker that completed it, timeline",
    security=OPERATOR,
    ok={200: ("the self-test", ActionViewSchema)},
    errors=(401, 404, 503),
    error_text={404: "no such self-test"},
)
@require_operator
def show_selftest(action_id: int) -> tuple[dict[str, Any], int]:
    """The self-test action: state, attempts, which worker completed it, and its timeline."""
    with services().sessions() as session:
        view = queries.action_view(session, action_id)
    if view is None or view["kind"] != "system.selftest":
        raise ApiError(404, "not_found", f"no self-test {action_id}")
    return view, 200


@bp.get("/alarms")
@operation(
    "The alarm queue (operator key): life-safety first, then oldest",
    security=OPERATOR,
    query=AlarmListQuerySchema,
    ok={200: ("the alarms", AlarmListSchema)},
    errors=(401, 422, 429, 503),
)
@require_operator
def list_alarms() -> tuple[dict[str, Any], int]:
    """The alarm queue, life-safety first then oldest first; filter unrouted or needs-a-person.

    ``active`` (the default) and ``needs_person`` hold the ended alarms a person must still act on
    too: a responder to recall by hand is a person's to-do whatever state the alarm is in."""
    params = AlarmListQuerySchema().load(request.args.to_dict())
    state = params.pop("state")
    states = {"all": None, "active": ACTIVE_ALARM_STATES}.get(state, (state,))
    waiting = state in ("active", AlarmState.NEEDS_PERSON)
    with services().sessions() as session:
        alarms = queries.list_alarms(session, states=states, ended_needing_person=waiting, **params)
    return {"alarms": alarms, "limit": params["limit"], "offset": params["offset"]}, 200


@bp.get(f"/alarms/<{LEDGER_ID}:alarm_id>")
@operation(
    "One alarm with its events, actions and timeline (operator key)",
    security=OPERATOR,
    ok={200: ("the alarm", AlarmDetailSchema)},
    errors=(401, 404, 503),
    error_text={404: "no such alarm"},
)
@require_operator
def show_alarm(alarm_id: int) -> tuple[dict[str, Any], int]:
    """One alarm: its events, every action with its state, and the timeline."""
    with services().sessions() as session:
        detail = queries.alarm_detail(session, alarm_id)
    if detail is None:
        raise ApiError(404, "not_found", f"no alarm {alarm_id}")
    return detail, 200


def _command_body() -> dict[str, Any]:
    return optional_json_object()


def _run_on_alarm(alarm_id: int, command: Callable[[Session, int], list[DueAction]]) -> dict[str, Any]:
    """One command in one transaction, its upstream steps published after commit; the alarm after it."""
    svc = services()
    with svc.sessions.begin() as session:
        due = command(session, svc.settings.action_max_attempts)
    svc.outbox.publish(due)
    with svc.sessions() as session:
        detail = queries.alarm_detail(session, alarm_id)
    assert detail is not None
    return detail


@bp.post(f"/alarms/<{LEDGER_ID}:alarm_id>/verify")
@_alarm_command(
    "Record the verdict (valid / false / none), carry it to Alta; false ends it", VerifyRequestSchema
)
@require_operator
def verify_alarm(alarm_id: int) -> tuple[dict[str, Any], int]:
    """Record the operator's verdict (valid / false / none) and carry it to Alta; false ends the alarm."""
    verdict = VerifyRequestSchema().load(_command_body())["verdict"]
    return _run_on_alarm(
        alarm_id,
        lambda s, attempts: operations.verify(s, alarm_id, verdict, now=utcnow(), max_attempts=attempts),
    ), 200


@bp.post(f"/alarms/<{LEDGER_ID}:alarm_id>/acknowledge")
@_alarm_command(
    "A person has taken the alarm: it leaves the needs-a-person list (an ended one too; its outcome stands)",
    ended="the alarm has ended and waits for no person",
)
@require_operator
def acknowledge_alarm(alarm_id: int) -> tuple[dict[str, Any], int]:
    """A person has taken the alarm; one a panel's cancel stood down ends as cancelled, and an ended
    one that something raised after its end leaves the needs-a-person list (its outcome stands)."""
    EmptySchema().load(_command_body())
    return _run_on_alarm(
        alarm_id,
        lambda s, attempts: operations.acknowledge(s, alarm_id, now=utcnow(), max_attempts=attempts),
    ), 200


@bp.post(f"/alarms/<{LEDGER_ID}:alarm_id>/end")
@_alarm_command(
    "End with an outcome: stop what has not started, end the Alta alert, stand down", EndRequestSchema
)
@require_operator
def end_alarm(alarm_id: int) -> tuple[dict[str, Any], int]:
    """End the alarm: stops what has not started, ends the Alta alert, stands responders down."""
    outcome = EndRequestSchema().load(_command_body())["outcome"]
    return _run_on_alarm(
        alarm_id,
        lambda s, attempts: operations.end(s, alarm_id, outcome, now=utcnow(), max_attempts=attempts),
    ), 200


@bp.post(f"/actions/<{LEDGER_ID}:action_id>/retry")
@operation(
    "Run a failed action again with fresh attempts (operator key)",
    security=OPERATOR,
    ok={202: ("the action, queued", ActionViewSchema)},
    errors=COMMAND_ERRORS,
    error_text={
        404: "no such action",
        409: "not failed, or its alarm has ended",
        422: "a body with fields (it takes none)",
    },
)
@require_operator
def retry_action(action_id: int) -> tuple[dict[str, Any], int]:
    """Run a failed action again with a fresh set of attempts."""
    EmptySchema().load(_command_body())
    svc = services()
    with svc.sessions.begin() as session:
        due = operations.retry_action(
            session, action_id, now=utcnow(), max_attempts=svc.settings.action_max_attempts
        )
    svc.outbox.publish([due])
    with svc.sessions() as session:
        view = queries.action_view(session, action_id)
    return view or {}, 202


@bp.get("/actions")
@operation(
    "Actions by state (operator key); ?state=failed (the default) is the dead-letter view",
    security=OPERATOR,
    query=ActionListQuerySchema,
    ok={200: ("the actions, newest first", ActionListSchema)},
    errors=(401, 422, 429, 503),
)
@require_operator
def list_actions() -> tuple[dict[str, Any], int]:
    """Actions by state, newest first; `?state=failed` (the default) is the dead-letter view."""
    params = ActionListQuerySchema().load(request.args.to_dict())
    with services().sessions() as session:
        rows = queries.list_actions(
            session, states=(params["state"],), limit=params["limit"], offset=params["offset"]
        )
    return {"actions": rows, "limit": params["limit"], "offset": params["offset"]}, 200
