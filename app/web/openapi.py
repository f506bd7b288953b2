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
    BatchReceiptSchema,
    BatchSchema,
    CallOnAlarmTriggerSchema,
    ErrorSchema,
    IntakeReceiptSchema,
    PanelEventSchema,
)
from app.web.operator.schemas import (
    LEDGER_ID_MAX,
    OFFSET_MAX,
    PAGE_LIMIT_MAX,
    SITE_KEY,
    ActionListSchema,
    ActionViewSchema,
    AlarmDetailSchema,
    AlarmListSchema,
    EndRequestSchema,
    SelftestReceiptSchema,
    SelftestRequestSchema,
    VerifyRequestSchema,
)

bp = Blueprint("openapi", __name__, template_folder="templates")

# Three kinds of caller hold three kinds of credential, so each has its own scheme: a client (or
# schemathesis, given one credential per scheme) can tell which secret each operation wants.
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "operatorKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An operator key (OPERATOR_API_KEYS). The dashboard's signed-in session cookie "
        "is accepted instead only together with its `X-CSRF-Token` header.",
    },
    "panelToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The token of a `panel` source of the sites file (its `token_env`).",
    },
    "panelSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "webhook-signature",
        "description": "Standard Webhooks, with a `panel` source's signing secret (`signing_secrets_env`): "
        "HMAC-SHA256 over id.timestamp.body, with webhook-id and webhook-timestamp (±5 min).",
    },
    "altaToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "The token of an `alta` source of the sites file (its `token_env`).",
    },
    "altaTokenQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "The same `alta` source token in the URL, for senders that can only set a URL.",
    },
}
OPERATOR = [{"operatorKey": []}]
PANEL_SOURCE = [{"panelToken": []}, {"panelSignature": []}]
ALTA_SOURCE = [{"altaToken": []}, {"altaTokenQuery": []}]

_ERRORS = {
    "400": "malformed JSON, JSON nested deeper than 32 levels, or a body that is not a JSON object",
    "401": "missing or wrong credential",
    "403": "valid credential, not for this source or site",
    "404": "no such resource",
    "409": "the state of the alarm or action refuses the command",
    "413": "body over MAX_BODY_BYTES",
    "415": "not application/json",
    "422": "invalid fields or query parameters, each named in `fields`",
    "429": "too many wrong credentials from this address (AUTH_FAILURE_LIMIT): wait `Retry-After` seconds",
    "503": "the ledger cannot be reached: nothing was recorded; try again after `Retry-After` seconds",
}
_HEADERS = {
    "401": {"WWW-Authenticate": {"description": "`Bearer`", "required": True, "schema": {"type": "string"}}},
    "429": {"Retry-After": {"description": "seconds", "required": True, "schema": {"type": "integer"}}},
    "503": {"Retry-After": {"description": "seconds", "required": True, "schema": {"type": "integer"}}},
}
_RECEIPT = {
    "202": ("recorded (committed): the sender may forget the event", "IntakeReceipt"),
    "200": ("already recorded: the same ids, `duplicate: true`", "IntakeReceipt"),
}
# Ids are PostgreSQL `integer` in the ledger; the routes answer 404 for any id beyond them.
_ID = {"type": "integer", "minimum": 0, "maximum": LEDGER_ID_MAX}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": PAGE_LIMIT_MAX}
_OFFSET = {"type": "integer", "minimum": 0, "maximum": OFFSET_MAX}
_SITE = {"type": "string", "pattern": "^" + SITE_KEY.removesuffix("\\Z") + "$"}


def _responses(
    ok: dict[str, tuple[str, str | dict[str, Any]]], errors: tuple[str, ...], **descriptions: str
) -> dict[str, Any]:
    """Answers: ``ok`` as ``{status: (description, schema)}``; the error statuses with the envelope
    (``descriptions`` overrides the generic text, keyed ``e404``)."""
    out: dict[str, Any] = {
        code: {"description": text, "content": {"application/json": {"schema": schema}}}
        for code, (text, schema) in ok.items()
    }
    if "401" in errors and "429" not in errors:  # every credential check is rate-limited on failure
        errors = (*errors, "429")
    for code in sorted(errors):
        out[code] = {
            "description": descriptions.get(f"e{code}", _ERRORS[code]),
            "content": {"application/json": {"schema": "Error"}},
        }
        if code in _HEADERS:
            out[code]["headers"] = _HEADERS[code]
    return out


def _path_id(name: str) -> list[dict[str, Any]]:
    return [{"in": "path", "name": name, "required": True, "schema": _ID}]


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
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    for name, schema in (
        ("PanelEvent", PanelEventSchema),
        ("CallOnAlarmTrigger", CallOnAlarmTriggerSchema),
        ("AltaWebhook", AltaWebhookSchema),
        ("Batch", BatchSchema),
        ("IntakeReceipt", IntakeReceiptSchema),
        ("BatchReceipt", BatchReceiptSchema),
        ("Error", ErrorSchema),
        ("SelftestRequest", SelftestRequestSchema),
        ("SelftestReceipt", SelftestReceiptSchema),
        ("VerifyRequest", VerifyRequestSchema),
        ("EndRequest", EndRequestSchema),
        ("AlarmList", AlarmListSchema),
        ("AlarmDetail", AlarmDetailSchema),
        ("ActionList", ActionListSchema),
        ("ActionView", ActionViewSchema),
    ):
        spec.components.schema(name, schema=schema)
    spec.components.schema("Health", {"type": "object", "required": ["status"], "properties": {
        "status": {"type": "string", "enum": ["ok"]}}})  # fmt: skip
    spec.components.schema("Readiness", {
        "type": "object", "required": ["status", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ready", "not_ready"]},
            "checks": {"type": "object", "additionalProperties": {"type": "string"},
                       "description": "`ok`, or `down: <reason>`, for `ledger` and `broker`"},
        },
    })  # fmt: skip
    intake_errors = ("400", "401", "403", "413", "415", "422", "429", "503")
    spec.path(
        path="/v1/webhooks/alta",
        operations={"post": {
            "summary": "Receive an Alta Protect alarm-zone webhook (the body of our template)",
            "security": ALTA_SOURCE,
            "requestBody": {"required": True, "content": {"application/json": {"schema": "AltaWebhook"}}},
            "responses": _responses(_RECEIPT, intake_errors),
        }},
    )  # fmt: skip
    spec.path(
        path="/v1/events",
        operations={"post": {
            "summary": "Receive an SIA DC-05 panel event (ours, or CallOnAlarm's trigger body unchanged)",
            "security": PANEL_SOURCE,
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
            "security": PANEL_SOURCE,
            "requestBody": {"required": True, "content": {"application/json": {"schema": "Batch"}}},
            "responses": _responses(
                {"200": ("one result per event: 202/200 with ids, or its own 403/422, or 500/503 (send the "
                         "batch again: recorded events answer 200 duplicate)", "BatchReceipt")},
                intake_errors,
            ),
        }},
    )  # fmt: skip
    spec.path(
        path="/v1/alarms",
        operations={"get": {
            "summary": "The alarm queue (operator key): life-safety first, then oldest",
            "security": OPERATOR,
            "parameters": [
                {"in": "query", "name": "state",
                 "schema": {"type": "string", "enum": ["active", "open", "needs_person", "ended", "all"]}},
                {"in": "query", "name": "site", "schema": _SITE},
                {"in": "query", "name": "priority", "schema": {
                    "type": "string", "enum": ["life_safety", "property", "technical", "informational"]}},
                {"in": "query", "name": "opened_after", "schema": {"type": "string", "format": "date-time"}},
                {"in": "query", "name": "opened_before", "schema": {"type": "string", "format": "date-time"}},
                {"in": "query", "name": "offset", "schema": _OFFSET},
                {"in": "query", "name": "unrouted", "schema": {"type": "boolean"}},
                {"in": "query", "name": "needs_person", "schema": {"type": "boolean"}},
                {"in": "query", "name": "limit", "schema": _LIMIT},
            ],
            "responses": _responses({"200": ("the alarms", "AlarmList")}, ("401", "422", "429", "503")),
        }},
    )  # fmt: skip
    spec.path(
        path="/v1/alarms/{alarm_id}",
        operations={"get": {
            "summary": "One alarm with its events, actions and timeline (operator key)",
            "security": OPERATOR,
            "parameters": _path_id("alarm_id"),
            "responses": _responses(
                {"200": ("the alarm", "AlarmDetail")}, ("401", "404", "503"), e404="no such alarm"
            ),
        }},
    )  # fmt: skip
    spec.path(
        path="/v1/system/selftest",
        operations={"post": {
            "summary": "Send a self-test through broker and worker (operator key)",
            "security": OPERATOR,
            "requestBody": {"content": {"application/json": {"schema": "SelftestRequest"}}},
            "responses": _responses(
                {"202": ("sent: poll `status_url`", "SelftestReceipt")},
                ("400", "401", "413", "415", "422", "503"),
            ),
        }},
    )  # fmt: skip
    spec.path(
        path="/v1/system/selftest/{action_id}",
        operations={"get": {
            "summary": "The self-test action: state, attempts, the worker that completed it, timeline",
            "security": OPERATOR,
            "parameters": _path_id("action_id"),
            "responses": _responses(
                {"200": ("the self-test", "ActionView")}, ("401", "404", "503"), e404="no such self-test"
            ),
        }},
    )  # fmt: skip
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
            "security": OPERATOR,
            "parameters": _path_id("alarm_id"),
            "responses": _responses(
                {"200": ("the alarm after the command (as GET /v1/alarms/{alarm_id})", "AlarmDetail")},
                ("400", "401", "404", "409", "413", "415", "422", "503"),
                e404="no such alarm",
                e409="the alarm has ended",
                e422="invalid fields (acknowledge takes none), each named in `fields`",
            ),
        }
        if schema:
            operation["requestBody"] = {"content": {"application/json": {"schema": schema}}}
        spec.path(path=f"/v1/alarms/{{alarm_id}}/{name}", operations={"post": operation})
    spec.path(
        path="/v1/actions",
        operations={"get": {
            "summary": "Actions by state (operator key); ?state=failed (the default) is the dead-letter view",
            "security": OPERATOR,
            "parameters": [
                {"in": "query", "name": "state", "schema": {"type": "string", "enum": [
                    "pending", "queued", "running", "succeeded", "failed", "cancelled"]}},
                {"in": "query", "name": "offset", "schema": _OFFSET},
                {"in": "query", "name": "limit", "schema": _LIMIT},
            ],
            "responses": _responses(
                {"200": ("the actions, newest first", "ActionList")}, ("401", "422", "429", "503")
            ),
        }},
    )  # fmt: skip
    spec.path(
        path="/v1/actions/{action_id}/retry",
        operations={"post": {
            "summary": "Run a failed action again with fresh attempts (operator key)",
            "security": OPERATOR,
            "parameters": _path_id("action_id"),
            "responses": _responses(
                {"202": ("the action, queued", "ActionView")},
                ("400", "401", "404", "409", "413", "415", "422", "503"),
                e404="no such action",
                e409="not failed, or its alarm has ended",
                e422="a body with fields (it takes none)",
            ),
        }},
    )  # fmt: skip
    spec.path(
        path="/healthz",
        operations={
            "get": {"summary": "Liveness", "responses": _responses({"200": ("alive", "Health")}, ())}
        },
    )
    spec.path(
        path="/readyz",
        operations={"get": {"summary": "Readiness: ledger and broker", "responses": _responses(
            {"200": ("ready", "Readiness"), "503": ("names what is down", "Readiness")}, ())}},
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
