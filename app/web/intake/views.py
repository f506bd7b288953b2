"""Intake views: authenticate, validate, record in one transaction, publish after commit, answer.

202 means committed: the sender may forget the event. A repeat of a recorded event answers 200 with
the same ids. Views stay glue: the rules live in app.domain.intake.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import marshmallow as ma
import structlog
from flask import g

from app import telemetry
from app.domain import intake
from app.domain.events import Event
from app.domain.intake import Receipt
from app.domain.sites import Source
from app.ledger.models import utcnow
from app.web.auth import authenticate_source
from app.web.bodies import json_object
from app.web.errors import ApiError
from app.web.intake import bp
from app.web.intake.schemas import (
    AltaWebhookSchema,
    BatchSchema,
    CallOnAlarmTriggerSchema,
    PanelEventSchema,
    is_callonalarm_body,
)
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


@bp.post("/webhooks/alta")
def receive_alta_webhook() -> tuple[dict[str, Any], int]:
    """Record one Alta Protect alarm-zone webhook."""
    source = _authenticated(authenticate_source(services().sites, "alta"))
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
    )
    receipt = _record(event)
    return receipt.as_json(), 200 if receipt.duplicate else 202


@bp.post("/events")
def receive_panel_event() -> tuple[dict[str, Any], int]:
    """Record one SIA event, in our body or in CallOnAlarm's trigger body."""
    source = _authenticated(authenticate_source(services().sites, "panel"))
    body = json_object()
    event = _panel_event(source, body, received_at=utcnow())
    receipt = _record(event)
    return receipt.as_json(), 200 if receipt.duplicate else 202


@bp.post("/events:batch")
def receive_panel_events() -> tuple[dict[str, Any], int]:
    """Record up to 500 SIA events; each is answered on its own, one bad event rejects no other."""
    source = _authenticated(authenticate_source(services().sites, "panel"))
    events = _batch_schema.load(json_object())["events"]
    received_at = utcnow()
    results: list[dict[str, Any]] = []
    due = []
    for index, body in enumerate(events):
        try:
            if not isinstance(body, dict):
                raise ApiError(422, "invalid_request", "each event must be a JSON object")
            receipt = _record(_panel_event(source, body, received_at=received_at), publish=False)
        except ma.ValidationError as exc:
            messages = exc.normalized_messages()
            results.append({"index": index, "status": 422, "error": "invalid_request", "fields": messages})
            telemetry.EVENTS_RECEIVED.labels(source.key, "rejected", "invalid_request").inc()
            continue
        except ApiError as exc:
            results.append({"index": index, "status": exc.status, "error": exc.error, "message": exc.message})
            telemetry.EVENTS_RECEIVED.labels(source.key, "rejected", exc.error).inc()
            continue
        due.extend(receipt.due_actions)
        results.append({"index": index, "status": 200 if receipt.duplicate else 202, **receipt.as_json()})
    services().outbox.publish(due)
    return {"results": results}, 200


def _panel_event(source: Source, body: dict[str, Any], *, received_at: datetime) -> Event:
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
    )


def _authenticated(source: Source) -> Source:
    """Remember who is calling, so that a rejection is counted against its source."""
    g.intake_source = source.key
    return source


def _record(event: Event, *, publish: bool = True) -> Receipt:
    svc = services()
    _refuse_foreign_identifier(event)
    started = time.perf_counter()
    with svc.sessions.begin() as session:
        receipt = intake.record_event(session, event, sites=svc.sites, rules=svc.intake_rules)
    telemetry.LEDGER_WRITES.labels("intake").observe(time.perf_counter() - started)
    if publish:
        svc.outbox.publish(receipt.due_actions)
    telemetry.EVENTS_RECEIVED.labels(
        event.source_key, "duplicate" if receipt.duplicate else "accepted", ""
    ).inc()
    if receipt.opened is not None:
        telemetry.ALARMS_OPENED.labels(*receipt.opened).inc()
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
    if owners:
        names = ", ".join(site.key for site in owners)
        raise ApiError(
            403,
            "forbidden",
            f"{event.account!r} belongs to {names}, which does not accept {event.source_key!r}",
        )
