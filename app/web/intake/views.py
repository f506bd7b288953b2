"""Intake views: authenticate, validate, record in one transaction, publish after commit, answer.

202 means committed: the sender may forget the event. A repeat of a recorded event answers 200 with
the same ids. Views stay glue: the rules live in app.domain.intake.

No body makes a 5xx: what JSON can hold but the ledger cannot is normalised by app.web.bodies, a
value the ledger still refuses is the event's own 422, and only an error of ours (logged with its
traceback) or an unreachable ledger (503) is a 5xx.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

import marshmallow as ma
import structlog
from flask import g, request
from sqlalchemy import exc as sa_exc

from app import telemetry
from app.domain import intake, sia
from app.domain.events import Event, SourceKind
from app.domain.intake import Receipt
from app.domain.site_tables import normalise
from app.domain.sites import Source
from app.ledger.models import utcnow
from app.web.auth import authenticate_source
from app.web.bodies import json_object, read_body
from app.web.errors import ApiError, invalid_fields, ledger_unreachable
from app.web.intake import bp
from app.web.intake.schemas import (
    AltaWebhookSchema,
    BatchReceiptSchema,
    BatchSchema,
    CallOnAlarmTriggerSchema,
    IntakeReceiptSchema,
    PanelEventSchema,
    is_callonalarm_body,
)
from app.web.openapi import ALTA_SOURCE, PANEL_SOURCE, operation
from app.web.services import services

log = structlog.get_logger(__name__)
_panel_schema = PanelEventSchema()
_callonalarm_schema = CallOnAlarmTriggerSchema()
_alta_schema = AltaWebhookSchema()
_batch_schema = BatchSchema()
ALTA_DETAILS = {
    "alarmZoneName": "alarm_zone_name",
    "deviceId": "device_id",
    "deviceName": "device_name",
    "siteId": "alta_site_id",
    "siteName": "alta_site_name",
    "triggerPhase": "phase",
    "detection": "detection",
    "verification": "verification",
    "description": "description",
    "address": "address",
    "url": "url",
}
# What every intake route may answer besides its receipt.
INTAKE_ERRORS = (400, 401, 403, 413, 415, 422, 429, 503)
RECEIPT = {
    202: ("recorded (committed): the sender may forget the event", IntakeReceiptSchema),
    200: ("already recorded: the same ids, `duplicate: true`", IntakeReceiptSchema),
}


@bp.post("/webhooks/alta")
@operation(
    "Receive an Alta Protect alarm-zone webhook (the body of our template)",
    security=ALTA_SOURCE,
    body=AltaWebhookSchema,
    body_required=True,
    ok=RECEIPT,
    errors=INTAKE_ERRORS,
)
def receive_alta_webhook() -> tuple[dict[str, Any], int]:
    """Record one Alta Protect alarm-zone webhook."""
    source = _authenticated("alta")
    body = json_object()
    data = _alta_schema.load(body)
    event = Event(
        source_key=source.key,
        source_kind="alta",
        received_at=utcnow(),
        account=data["alarmZoneId"],
        zone=data["alarmZoneId"],
        message=data.get("description") or data.get("detection"),
        occurred_at=data["occurred_at"],
        sender_event_id=data.get("eventId"),
        details={ours: data[theirs] for theirs, ours in ALTA_DETAILS.items() if data.get(theirs)},
        payload=body,
        delivery_id=_delivery_id(),
        unusable_time=data["unusable_time"],
    )
    receipt = _record(event)
    return receipt.as_json(), 200 if receipt.duplicate else 202


@bp.post("/events")
@operation(
    "Receive an SIA DC-05 panel event (ours, or CallOnAlarm's trigger body unchanged)",
    security=PANEL_SOURCE,
    body=(PanelEventSchema, CallOnAlarmTriggerSchema),
    body_required=True,
    ok=RECEIPT,
    errors=INTAKE_ERRORS,
)
def receive_panel_event() -> tuple[dict[str, Any], int]:
    """Record one SIA event, in our body or in CallOnAlarm's trigger body."""
    source = _authenticated("panel")
    body = json_object()
    event = _panel_event(source, body, received_at=utcnow(), delivery_id=_delivery_id())
    receipt = _record(event)
    return receipt.as_json(), 200 if receipt.duplicate else 202


@bp.post("/events:batch")
@operation(
    "Receive up to 500 panel events; `results[i]` answers `events[i]` with its own status",
    security=PANEL_SOURCE,
    body=BatchSchema,
    body_required=True,
    ok={
        200: (
            "one result per event: 202/200 with ids, or its own 403/422, or 500/503 (send the batch "
            "again: recorded events answer 200 duplicate)",
            BatchReceiptSchema,
        )
    },
    errors=INTAKE_ERRORS,
)
def receive_panel_events() -> tuple[dict[str, Any], int]:
    """Record up to 500 SIA events, each in its own transaction and answered on its own.

    Whatever one event does, the others are recorded: its result is its own 422 (naming the field)
    or 403, or, for an error of ours, a 500 (logged with its traceback). Each event's due steps are
    handed to the workers right after its own commit, so a fire alarm never waits for the events
    after it. The sender resends the batch for any 5xx result: what was recorded answers 200
    duplicate. An unreachable ledger answers 503 for that event and those after it, which are not
    tried (each would wait for the same ledger).
    """
    source = _authenticated("panel")
    events = _batch_schema.load(json_object())["events"]
    received_at = utcnow()
    delivery_id = _delivery_id()
    results: dict[int, dict[str, Any]] = {}
    unavailable = False
    parsed = [_batch_item(source, index, body, received_at, delivery_id) for index, body in enumerate(events)]
    for index in _life_safety_first(parsed):
        if unavailable:
            results[index] = _unavailable(index)
            continue
        try:
            item = parsed[index]
            if isinstance(item, Exception):
                raise item  # answered below as its own 422, 403 or 500
            receipt = _record(item)
        except ma.ValidationError as exc:
            fields = invalid_fields(exc)
            results[index] = {"index": index, "status": 422, "error": "invalid_request", "fields": fields}
            telemetry.EVENTS_RECEIVED.labels(source.key, "rejected", "invalid_request").inc()
            continue
        except ApiError as exc:
            results[index] = {
                "index": index,
                "status": exc.status,
                "error": exc.error,
                "message": exc.message,
            }
            telemetry.EVENTS_RECEIVED.labels(source.key, "rejected", exc.error).inc()
            continue
        except Exception as exc:  # noqa: BLE001 - one event's failure is its own answer, not the batch's
            unavailable = ledger_unreachable(exc)
            if unavailable:
                log.warning(
                    "intake.ledger_unavailable", source=source.key, index=index, error_type=type(exc).__name__
                )
            results[index] = _unavailable(index) if unavailable else _failed(index, source, exc)
            telemetry.EVENTS_RECEIVED.labels(source.key, "rejected", results[index]["error"]).inc()
            continue
        results[index] = {"index": index, "status": 200 if receipt.duplicate else 202, **receipt.as_json()}
    return {"results": [results[index] for index in range(len(events))]}, 200


def _batch_item(
    source: Source, index: int, body: Any, received_at: datetime, delivery_id: str | None
) -> Event | Exception:
    """One event of a batch as intake will record it, or why it cannot be (raised in its turn)."""
    try:
        if not isinstance(body, dict):
            raise ApiError(422, "invalid_request", "each event must be a JSON object")
        item_delivery = f"{delivery_id}#{index}" if delivery_id else None
        return _panel_event(source, body, received_at=received_at, delivery_id=item_delivery)
    except Exception as exc:  # noqa: BLE001 - one event's failure is its own answer, not the batch's
        return exc


def _life_safety_first(items: list[Event | Exception]) -> list[int]:
    """The order a batch is recorded in: life-safety events first, unless one of their account's
    signals comes earlier in the batch (one account's signals keep their order: a fire restore never
    overtakes its fire); then the rest as sent. Results are answered in the batch's own order.

    The events are read as intake reads them, so an account sent as a number or in a CallOnAlarm body
    (``accountNumber``, ``eventCode``) is the same account as its string in another item. An item
    that cannot be read is not recorded, so it holds no place.
    """
    seen: set[str] = set()
    first: list[int] = []
    rest: list[int] = []
    for index, item in enumerate(items):
        if isinstance(item, Exception):
            rest.append(index)
            continue
        key = normalise(item.account)
        urgent = item.code is not None and sia.is_life_safety(item.code)
        (first if urgent and key not in seen else rest).append(index)
        seen.add(key)
    return first + rest


def _failed(index: int, source: Source, exc: Exception) -> dict[str, Any]:
    """A 500 result for one event of a batch: logged with its traceback, the batch goes on."""
    request_id = structlog.contextvars.get_contextvars().get("request_id") or uuid.uuid4().hex[:16]
    log.exception(  # called in the except block: the traceback is logged
        "intake.batch_event_failed",
        source=source.key,
        index=index,
        error_type=type(exc).__name__,
        request_id=request_id,
    )
    message = f"unexpected error; request id {request_id}; send the batch again"
    return {"index": index, "status": 500, "error": "internal_error", "message": message}


def _unavailable(index: int) -> dict[str, Any]:
    message = "the ledger is unavailable; send the batch again (a recorded event answers 200 duplicate)"
    return {"index": index, "status": 503, "error": "unavailable", "message": message}


def _panel_event(
    source: Source, body: dict[str, Any], *, received_at: datetime, delivery_id: str | None
) -> Event:
    schema = _callonalarm_schema if is_callonalarm_body(body) else _panel_schema
    data = schema.load(body)
    return Event(
        source_key=source.key,
        source_kind="panel",
        received_at=received_at,
        account=data["account"],
        code=data["code"],
        zone=data["zone"],
        message=data["message"],
        occurred_at=data["occurred_at"],
        sender_event_id=data["event_id"],
        payload=body,
        delivery_id=delivery_id,
        unusable_time=data["unusable_time"],
    )


def _authenticated(kind: SourceKind) -> Source:
    """The calling source, remembered so that a rejection is counted against it.

    The body is read first, within MAX_BODY_BYTES however it is framed: a signature check reads it
    too, and must see the same bytes json_object() parses.
    """
    read_body()
    source = authenticate_source(services().sites, kind)
    g.intake_source = source.key
    return source


def _delivery_id() -> str | None:
    """The ``webhook-id`` of a signed delivery; None for a bearer-token call.

    The signature covers the id, and whenever a signature header is present it is the only
    credential authenticate_source accepts: an id read here has been verified with the body.
    """
    if request.headers.get("webhook-signature") is None:
        return None
    return request.headers.get("webhook-id") or None


def _record(event: Event) -> Receipt:
    """Record the event in its own transaction, then hand its due steps to the workers."""
    svc = services()
    _refuse_foreign_identifier(event)
    # Life-safety first at the door: other events wait for one of a few slots (app.web.admission).
    with svc.gate.admit(event.classify().priority):
        started = time.perf_counter()
        try:
            with svc.sessions.begin() as session:
                receipt = intake.record_event(session, event, sites=svc.sites, rules=svc.intake_rules)
        except sa_exc.StatementError as exc:  # DataError among them
            if not _refused_value(exc):
                raise
            # bodies.py normalises every value we know the ledger refuses; one it still refuses is
            # this event's to fix (a retry would be refused again), and ours to learn about.
            log.warning("intake.value_refused", source=event.source_key, error_type=type(exc.orig).__name__)
            raise ApiError(
                422, "unstorable_value", "the ledger cannot store a value of this event; none was recorded"
            ) from None
        telemetry.LEDGER_WRITES.labels("intake").observe(time.perf_counter() - started)
    # Outside the slot: the gate orders ledger writes; a broker that is slow to take a message must
    # not hold back every other event of this process.
    svc.outbox.publish(receipt.due_actions)
    telemetry.count_recorded(event.source_key, duplicate=receipt.duplicate, opened=receipt.opened)
    log.info(
        "intake.duplicate" if receipt.duplicate else "intake.recorded",
        source=event.source_key,
        event_id=receipt.event_id,
        alarm_id=receipt.alarm_id,
    )
    return receipt


def _refuse_foreign_identifier(event: Event) -> None:
    """403 when the account or zone belongs to a site that does not accept this source."""
    sites = services().sites
    if intake.route(event, sites) is not None:
        return
    owners = (
        sites.sites_for_alta_zone(event.account)
        if event.source_kind == "alta"
        else sites.sites_for_account(event.account)
    )
    if owners:  # whose it is stays unsaid: the sites are other tenants'
        what = "alarm zone" if event.source_kind == "alta" else "account"
        raise ApiError(
            403, "forbidden", f"source {event.source_key!r} may not post events for {what} {event.account!r}"
        )


def _refused_value(exc: sa_exc.StatementError) -> bool:
    """Whether the ledger (or its driver, encoding a parameter) refused a value, not failed."""
    if isinstance(exc, sa_exc.DataError):
        return True
    return not isinstance(exc, sa_exc.DBAPIError) and isinstance(exc.orig, ValueError | OverflowError)
