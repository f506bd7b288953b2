"""The OpenAPI 3 document, generated from the same marshmallow schemas the views validate with,
served at ``/openapi.json``, and a plain HTML page of it at ``/docs`` (no JavaScript, no CDN)."""

from __future__ import annotations

from functools import cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, render_template

from app.web.intake.schemas import (
    AltaWebhookSchema,
    BatchSchema,
    CallOnAlarmTriggerSchema,
    ErrorSchema,
    IntakeReceiptSchema,
    PanelEventSchema,
)
from app.web.operator.schemas import EndRequestSchema, SelftestRequestSchema, VerifyRequestSchema

bp = Blueprint("openapi", __name__, template_folder="templates")

_ERRORS = {
    "400": "malformed JSON",
    "401": "missing or wrong credential",
    "403": "valid credential, not for this source or site",
    "413": "body over MAX_BODY_BYTES",
    "415": "not application/json",
    "422": "invalid fields, each named in `fields`",
}
_RECEIPT = {
    "202": {
        "description": "recorded (committed): the sender may forget the event",
        "schema": "IntakeReceipt",
    },
    "200": {"description": "already recorded: the same ids, `duplicate: true`", "schema": "IntakeReceipt"},
}


def _responses(ok: dict[str, dict[str, str]], errors: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {
        code: {"description": r["description"], "content": {"application/json": {"schema": r["schema"]}}}
        for code, r in ok.items()
    }
    for code in errors:
        out[code] = {"description": _ERRORS[code], "content": {"application/json": {"schema": "Error"}}}
    return out


@cache
def build_spec() -> dict[str, Any]:
    """The whole document (built once per process)."""
    spec = APISpec(
        title="alarm-bridge",
        version="0.1.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Alarm signals in; a coordinated, audited response out."},
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.security_scheme(
        "standardWebhooks",
        {"type": "apiKey", "in": "header", "name": "webhook-signature",
         "description": "Standard Webhooks: HMAC-SHA256 over id.timestamp.body, with webhook-id and "
                        "webhook-timestamp (±5 min)"},
    )  # fmt: skip
    spec.components.security_scheme("tokenQuery", {"type": "apiKey", "in": "query", "name": "token"})
    for name, schema in (
        ("PanelEvent", PanelEventSchema),
        ("CallOnAlarmTrigger", CallOnAlarmTriggerSchema),
        ("AltaWebhook", AltaWebhookSchema),
        ("Batch", BatchSchema),
        ("IntakeReceipt", IntakeReceiptSchema),
        ("Error", ErrorSchema),
        ("SelftestRequest", SelftestRequestSchema),
        ("VerifyRequest", VerifyRequestSchema),
        ("EndRequest", EndRequestSchema),
    ):
        spec.components.schema(name, schema=schema)
    intake_errors = ("400", "401", "403", "413", "415", "422")
    spec.path(
        path="/v1/webhooks/alta",
        operations={"post": {
            "summary": "Receive an Alta Protect alarm-zone webhook (the body of our template)",
            "security": [{"bearer": []}, {"tokenQuery": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": "AltaWebhook"}}},
            "responses": _responses(_RECEIPT, intake_errors),
        }},
    )  # fmt: skip
    spec.path(
        path="/v1/events",
        operations={"post": {
            "summary": "Receive an SIA DC-05 panel event (ours, or CallOnAlarm's trigger body unchanged)",
            "security": [{"bearer": []}, {"standardWebhooks": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "oneOf": [{"$ref": "#/components/schemas/PanelEvent"},
                          {"$ref": "#/components/schemas/CallOnAlarmTrigger"}]}}}},
            "responses": _responses(_RECEIPT, intake_errors),
        }},
    )  # fmt: skip
    spec.path(
        path="/v1/events:batch",
        operations={"post": {
            "summary": "Receive up to 500 panel events; `results[i]` answers `events[i]` with its own status",
            "security": [{"bearer": []}, {"standardWebhooks": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": "Batch"}}},
            "responses": {
                "200": {"description": "one result per event: 202/200 with ids, or its own 4xx"},
                **_responses({}, ("400", "401", "403", "413", "415", "422")),
            },
        }},
    )  # fmt: skip
    spec.path(
        path="/v1/alarms",
        operations={"get": {
            "summary": "The alarm queue (operator key): life-safety first, then oldest",
            "security": [{"bearer": []}],
            "parameters": [
                {"in": "query", "name": "state",
                 "schema": {"type": "string", "enum": ["active", "open", "needs_person", "ended", "all"]}},
                {"in": "query", "name": "site", "schema": {"type": "string"}},
                {"in": "query", "name": "priority", "schema": {"type": "string"}},
                {"in": "query", "name": "opened_after", "schema": {"type": "string", "format": "date-time"}},
                {"in": "query", "name": "opened_before", "schema": {"type": "string", "format": "date-time"}},
                {"in": "query", "name": "offset", "schema": {"type": "integer"}},
                {"in": "query", "name": "unrouted", "schema": {"type": "boolean"}},
                {"in": "query", "name": "needs_person", "schema": {"type": "boolean"}},
                {"in": "query", "name": "limit", "schema": {"type": "integer", "maximum": 1000}},
            ],
            "responses": {"200": {"description": "`{alarms: [...]}`"}, **_responses({}, ("401", "422"))},
        }},
    )  # fmt: skip
    spec.path(
        path="/v1/alarms/{alarm_id}",
        operations={"get": {
            "summary": "One alarm with its events, actions and timeline (operator key)",
            "security": [{"bearer": []}],
            "parameters": [
                {"in": "path", "name": "alarm_id", "required": True, "schema": {"type": "integer"}}
            ],
            "responses": {"200": {"description": "the alarm"}, "404": {"description": "no such alarm"}},
        }},
    )  # fmt: skip
    spec.path(
        path="/v1/system/selftest",
        operations={"post": {
            "summary": "Send a self-test through broker and worker (operator key)",
            "security": [{"bearer": []}],
            "requestBody": {"content": {"application/json": {"schema": "SelftestRequest"}}},
            "responses": {
                "202": {"description": "`{action_id, queue, status_url}`"}, **_responses({}, ("401", "422"))
            },
        }},
    )  # fmt: skip
    alarm_id = [{"in": "path", "name": "alarm_id", "required": True, "schema": {"type": "integer"}}]
    command_answers = {
        "200": {"description": "the alarm after the command (as GET /v1/alarms/{alarm_id})"},
        "404": {"description": "no such alarm"},
        "409": {"description": "the alarm has ended"},
        **_responses({}, ("401", "422")),
    }
    commands = (
        (
            "verify",
            "Record the verdict (valid / false / none), carry it to Alta; false ends it",
            "VerifyRequest",
        ),
        ("acknowledge", "A person has taken the alarm (it leaves the needs-a-person list)", None),
        (
            "end",
            "End with an outcome: stop what has not started, end the Alta alert, stand down",
            "EndRequest",
        ),
    )
    for name, summary, schema in commands:
        operation: dict[str, Any] = {
            "summary": summary,
            "security": [{"bearer": []}],
            "parameters": alarm_id,
            "responses": command_answers,
        }
        if schema:
            operation["requestBody"] = {"content": {"application/json": {"schema": schema}}}
        spec.path(path=f"/v1/alarms/{{alarm_id}}/{name}", operations={"post": operation})
    spec.path(
        path="/v1/actions",
        operations={"get": {
            "summary": "Actions by state (operator key); ?state=failed (the default) is the dead-letter view",
            "security": [{"bearer": []}],
            "parameters": [{"in": "query", "name": "state", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "`{actions: [...]}`"}, **_responses({}, ("401", "422"))},
        }},
    )  # fmt: skip
    spec.path(
        path="/v1/actions/{action_id}/retry",
        operations={"post": {
            "summary": "Run a failed action again with fresh attempts (operator key)",
            "security": [{"bearer": []}],
            "parameters": [
                {"in": "path", "name": "action_id", "required": True, "schema": {"type": "integer"}}
            ],
            "responses": {
                "202": {"description": "the action, queued"},
                "404": {"description": "no such action"},
                "409": {"description": "not failed, or its alarm has ended"},
            },
        }},
    )  # fmt: skip
    spec.path(
        path="/healthz",
        operations={"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
    )
    spec.path(
        path="/readyz",
        operations={"get": {"summary": "Readiness: ledger and broker", "responses": {
            "200": {"description": "ready"}, "503": {"description": "names what is down"}}}},
    )  # fmt: skip
    return spec.to_dict()


@bp.get("/openapi.json")
def serve_openapi() -> dict[str, Any]:
    """The OpenAPI 3 document."""
    return build_spec()


@bp.get("/docs")
def show_docs() -> str:
    """The same document as a readable page."""
    spec = build_spec()
    operations = [
        {"method": method.upper(), "path": path, **operation}
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    ]
    return render_template("docs.html", spec=spec, operations=operations)
