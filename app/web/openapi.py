"""The OpenAPI 3 document of the JSON API, served at ``/openapi.json``, and a plain HTML page of it at
``/docs`` (no JavaScript, no CDN).

Each view declares its own operation with ``@operation``, beside its route and with the marshmallow
schemas it validates with; ``build_spec`` walks the application's ``url_map`` and documents every view
that carries one (apispec's Flask plugin turns the rule into the path). A view that declares none is
not part of the API: the dashboard's pages, static files, ``/metrics`` and this document itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import marshmallow as ma
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec_webframeworks.flask import FlaskPlugin
from flask import Blueprint, Flask, current_app, render_template
from werkzeug.routing import BaseConverter, Rule
from werkzeug.routing.converters import FloatConverter, IntegerConverter, UUIDConverter

from app.web.errors import ErrorSchema

bp = Blueprint("openapi", __name__, template_folder="templates")

View = TypeVar("View", bound=Callable[..., object])
# An answer's or a body's schema: a marshmallow schema (registered as a component under its name
# without "Schema"), or, for a body that may take either of several shapes, a tuple of them (oneOf).
SchemaRef = type[ma.Schema] | tuple[type[ma.Schema], ...]
Security = tuple[Mapping[str, list[str]], ...]

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
OPERATOR: Security = ({"operatorKey": []},)
PANEL_SOURCE: Security = ({"panelToken": []}, {"panelSignature": []})
ALTA_SOURCE: Security = ({"altaToken": []}, {"altaTokenQuery": []})

_ERRORS = {
    400: "malformed JSON, JSON nested deeper than 32 levels, or a body that is not a JSON object",
    401: "missing or wrong credential",
    403: "valid credential, not for this source or site",
    404: "no such resource",
    409: "the state of the alarm or action refuses the command",
    413: "body over MAX_BODY_BYTES",
    415: "not application/json",
    422: "invalid fields or query parameters, each named in `fields`",
    429: "too many wrong credentials from this address (AUTH_FAILURE_LIMIT): wait `Retry-After` seconds",
    503: "the ledger cannot be reached: nothing was recorded; try again after `Retry-After` seconds",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds", "required": True, "schema": {"type": "integer"}}}
_HEADERS: dict[int, dict[str, dict[str, object]]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "required": True, "schema": {"type": "string"}}},
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}
_OPERATION: Final = "openapi_operation"  # the attribute @operation sets on a view function
_SPEC: Final = "openapi_spec"  # the built document, in app.extensions (built once per app)


@dataclass(frozen=True, slots=True)
class Operation:
    """What one view tells the document about itself (see ``operation``)."""

    summary: str
    ok: Mapping[int, tuple[str, SchemaRef]]
    errors: tuple[int, ...] = ()
    security: Security = ()
    body: SchemaRef | None = None
    body_required: bool = False
    query: type[ma.Schema] | None = None
    error_text: Mapping[int, str] = field(default_factory=dict)


def operation(
    summary: str,
    *,
    ok: Mapping[int, tuple[str, SchemaRef]],
    errors: tuple[int, ...] = (),
    security: Security = (),
    body: SchemaRef | None = None,
    body_required: bool = False,
    query: type[ma.Schema] | None = None,
    error_text: Mapping[int, str] | None = None,
) -> Callable[[View], View]:
    """Declare the view an operation of the API, so that the document is built from the views.

    ``ok`` maps each success status to ``(description, schema)``; ``errors`` lists the error statuses,
    each answered with the error envelope (``error_text`` overrides the generic description). A 401
    brings its 429: every credential check is rate-limited on failure. Path parameters come from the
    route's converters and query parameters from ``query``, the schema the view loads them with.
    Put it right under the route decorator, so that it marks the function the route registers.
    """
    declared = Operation(
        summary=summary,
        ok=ok,
        errors=errors,
        security=security,
        body=body,
        body_required=body_required,
        query=query,
        error_text=error_text or {},
    )

    def record(view: View) -> View:
        setattr(view, _OPERATION, declared)
        return view

    return record


def declared_operation(view: Callable[..., object]) -> Operation | None:
    """The operation ``view`` declares, or None for a view that is not part of the API."""
    declared = getattr(view, _OPERATION, None)
    return declared if isinstance(declared, Operation) else None


def build_spec(app: Flask) -> dict[str, Any]:
    """The whole document, from the operations the app's views declare, in the url_map's order."""
    marshmallow = MarshmallowPlugin()
    spec = APISpec(
        title="alarm-bridge",
        version="0.1.0",
        openapi_version="3.0.3",
        plugins=[FlaskPlugin(), marshmallow],
        info={"description": "Alarm signals in; a coordinated, audited response out."},
    )
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        declared = declared_operation(view)
        if declared is None:
            continue
        described = _describe(declared, rule, marshmallow)
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        spec.path(view=view, app=app, operations={method.lower(): dict(described) for method in methods})
    return spec.to_dict()


def _describe(declared: Operation, rule: Rule, marshmallow: MarshmallowPlugin) -> dict[str, Any]:
    described: dict[str, Any] = {"summary": declared.summary}
    if declared.security:
        described["security"] = [dict(requirement) for requirement in declared.security]
    parameters = _path_parameters(rule) + _query_parameters(declared.query, marshmallow)
    if parameters:
        described["parameters"] = parameters
    if declared.body is not None:
        body: dict[str, Any] = {"content": {"application/json": {"schema": _schema(declared.body)}}}
        if declared.body_required:
            body = {"required": True, **body}
        described["requestBody"] = body
    described["responses"] = _responses(declared)
    return described


def _responses(declared: Operation) -> dict[str, Any]:
    """The success answers with their schemas, then each error status with the error envelope."""
    out: dict[str, Any] = {
        str(status): {"description": text, "content": {"application/json": {"schema": _schema(schema)}}}
        for status, (text, schema) in declared.ok.items()
    }
    errors = set(declared.errors)
    if 401 in errors:  # every credential check is rate-limited on failure
        errors.add(429)
    for status in sorted(errors):
        answer: dict[str, Any] = {
            "description": declared.error_text.get(status, _ERRORS[status]),
            "content": {"application/json": {"schema": ErrorSchema}},
        }
        if status in _HEADERS:
            answer["headers"] = _HEADERS[status]
        out[str(status)] = answer
    return out


def _schema(ref: SchemaRef) -> type[ma.Schema] | dict[str, list[type[ma.Schema]]]:
    return {"oneOf": list(ref)} if isinstance(ref, tuple) else ref


def _path_parameters(rule: Rule) -> list[dict[str, Any]]:
    """One parameter per variable of the route, typed and bounded as its converter accepts it."""
    # Werkzeug keeps a compiled rule's converters only in this attribute; the unit test of the
    # document's path parameters fails if an upgrade drops it.
    converters: dict[str, BaseConverter] = rule._converters
    return [
        {"in": "path", "name": name, "required": True, "schema": _converter_schema(converter)}
        for name, converter in converters.items()
    ]


def _converter_schema(converter: BaseConverter) -> dict[str, Any]:
    if isinstance(converter, IntegerConverter):
        schema: dict[str, Any] = {"type": "integer"}
        minimum = converter.min if converter.min is not None else None if converter.signed else 0
        if minimum is not None:
            schema["minimum"] = minimum
        if converter.max is not None:
            schema["maximum"] = converter.max
        return schema
    if isinstance(converter, FloatConverter):
        return {"type": "number"}
    if isinstance(converter, UUIDConverter):
        return {"type": "string", "format": "uuid"}
    return {"type": "string"}


def _query_parameters(query: type[ma.Schema] | None, marshmallow: MarshmallowPlugin) -> list[dict[str, Any]]:
    """The query schema's fields as parameters, as a URL can carry them.

    A query parameter is absent or text, never null: marshmallow's ``load_default=None`` means "not
    given", so neither ``nullable`` nor a null default or enum member is documented. ``Regexp``
    matches from the start (``re.match``) and our patterns end in ``\\Z``; a JSON Schema pattern is
    searched anywhere and is ECMA 262, which has no ``\\Z``: the pattern is anchored with ``^…$``.
    """
    if query is None:
        return []
    assert marshmallow.converter is not None  # set when the plugin joined the spec
    parameters: list[dict[str, Any]] = marshmallow.converter.schema2parameters(query, location="query")
    for parameter in parameters:
        if parameter.get("required") is False:
            del parameter["required"]  # the default
        schema = parameter["schema"]
        if schema.pop("nullable", False):
            if schema.get("default", 0) is None:
                del schema["default"]
            if "enum" in schema:
                schema["enum"] = [value for value in schema["enum"] if value is not None]
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            anchored = "^" + pattern.removeprefix("^")
            schema["pattern"] = anchored.removesuffix("\\Z") + "$" if anchored.endswith("\\Z") else anchored
    return parameters


def current_spec() -> dict[str, Any]:
    """The current app's document, built on first use (the routes do not change once it serves)."""
    app = current_app
    spec: dict[str, Any] | None = app.extensions.get(_SPEC)
    if spec is None:
        spec = app.extensions[_SPEC] = build_spec(app)
    return spec


@bp.get("/openapi.json")
def serve_openapi() -> dict[str, Any]:
    """The OpenAPI 3 document."""
    return current_spec()


@bp.get("/docs")
def show_docs() -> str:
    """The same document as a readable page."""
    spec = current_spec()
    operations = [
        {"method": method.upper(), "path": path, **described}
        for path, item in spec["paths"].items()
        for method, described in item.items()
    ]
    return render_template("docs.html", spec=spec, operations=operations)
