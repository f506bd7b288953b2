"""/openapi.json is built from the views: no JSON route can be left out of it, and what it says about
parameters is what the routes and their schemas accept."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from apispec_webframeworks.flask import FlaskPlugin
from flask import Flask

from app.domain.outbox import RecordingOutbox
from app.web import create_app, openapi
from app.web.operator.schemas import LEDGER_ID_MAX
from config.settings import Settings

pytestmark = pytest.mark.unit


@pytest.fixture
def app(make_settings: Callable[..., Settings], sqlite_url: str) -> Iterator[Flask]:
    built = create_app(
        make_settings(database_url=sqlite_url, operator_api_keys=("test-operator-key",)),
        outbox=RecordingOutbox(),
        ping_broker=lambda: None,
    )
    yield built
    built.extensions["alarm_bridge"].engine.dispose()


@pytest.fixture
def spec(app: Flask) -> dict[str, Any]:
    answer = app.test_client().get("/openapi.json")
    assert answer.status_code == 200
    document: dict[str, Any] = answer.json  # type: ignore[assignment]
    return document


def test_every_route_that_answers_json_is_in_the_document(app: Flask, spec: dict[str, Any]) -> None:
    """Each route of the url_map is called as a stranger would (no credential, no body): whichever
    answers JSON is part of the API and must be documented, whatever its blueprint."""
    client = app.test_client()
    urls = app.url_map.bind("localhost")
    missing = []
    probed = 0
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        # Static files answer a missing file with the JSON 404 envelope; the document does not
        # describe itself.
        if rule.endpoint.rsplit(".", 1)[-1] == "static" or view is openapi.serve_openapi:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            url = urls.build(rule.endpoint, dict.fromkeys(rule.arguments, 1), method=method)
            probed += 1
            if not client.open(url, method=method).is_json:
                continue
            path = FlaskPlugin.flaskpath2openapi(rule.rule)
            if method.lower() not in spec["paths"].get(path, {}):
                missing.append(f"{method} {rule.rule} ({rule.endpoint})")
    assert probed > len(spec["paths"])  # the walk reached pages, not only the API
    assert not missing, f"JSON routes missing from /openapi.json (add @operation): {missing}"


def test_a_view_without_an_operation_is_not_documented(spec: dict[str, Any]) -> None:
    assert "/v1/events" in spec["paths"]
    assert not [path for path in spec["paths"] if path.startswith("/dashboard")]
    assert {"/metrics", "/openapi.json", "/docs", "/"}.isdisjoint(spec["paths"])


def test_path_parameters_are_bounded_as_the_route_converter_bounds_them(spec: dict[str, Any]) -> None:
    (parameter,) = spec["paths"]["/v1/alarms/{alarm_id}/end"]["post"]["parameters"]
    assert parameter == {
        "in": "path",
        "name": "alarm_id",
        "required": True,
        "schema": {"type": "integer", "minimum": 0, "maximum": LEDGER_ID_MAX},
    }


def test_query_parameters_come_from_the_view_schema_as_a_url_can_carry_them(spec: dict[str, Any]) -> None:
    parameters = {p["name"]: p for p in spec["paths"]["/v1/alarms"]["get"]["parameters"]}
    assert set(parameters) == {
        "state", "site", "priority", "opened_after", "opened_before", "offset", "unrouted", "needs_person",
        "limit",
    }  # fmt: skip
    assert all(p["in"] == "query" and "required" not in p for p in parameters.values())
    assert not [
        p for p in parameters.values() if "nullable" in p["schema"] or p["schema"].get("default", 0) is None
    ]
    assert parameters["priority"]["schema"]["enum"] == [
        "life_safety",
        "property",
        "technical",
        "informational",
    ]
    assert parameters["site"]["schema"]["pattern"] == "^[a-z0-9][a-z0-9_-]{0,63}$"  # ECMA 262, anchored
    assert parameters["limit"]["schema"] == {"type": "integer", "default": 100, "minimum": 1, "maximum": 1000}


def test_every_error_status_answers_the_envelope(spec: dict[str, Any]) -> None:
    answers = spec["paths"]["/v1/system/selftest"]["post"]["responses"]
    assert set(answers) == {"202", "400", "401", "413", "415", "422", "429", "503"}  # 401 brings its 429
    assert answers["401"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert answers["429"]["headers"]["Retry-After"]["required"] is True
    assert set(spec["components"]["schemas"]["Error"]["properties"]) == {"error", "message", "fields"}


def test_the_security_each_operation_declares_is_the_one_its_view_enforces(
    app: Flask, spec: dict[str, Any]
) -> None:
    """Each view states its credential twice, in ``@operation(security=...)`` and in the check it runs
    (``require_operator``, ``_authenticated``): called without any credential, an operation that
    declares one answers 401, and one that declares none never does."""
    client = app.test_client()
    urls = app.url_map.bind("localhost")
    wrong = []
    for rule in app.url_map.iter_rules():
        operations = spec["paths"].get(FlaskPlugin.flaskpath2openapi(rule.rule), {})
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            declared = operations.get(method.lower())
            if declared is None:
                continue
            url = urls.build(rule.endpoint, dict.fromkeys(rule.arguments, 1), method=method)
            status = client.open(url, method=method, json={}).status_code
            if bool(declared.get("security")) != (status == 401):
                wrong.append(f"{method} {rule.rule}: security {declared.get('security')}, answered {status}")
    assert len(spec["paths"]) > 10
    assert not wrong, wrong
