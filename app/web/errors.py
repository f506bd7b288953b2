"""One JSON error envelope for every failure the web side answers, mapped in one place.

``{"error": <code>, "message": <text>, "fields": {name: [messages]}}``: 400 for malformed bodies,
401/403 for credentials, 404, 409 for a command the alarm's state refuses, 413 for large bodies,
415 for a wrong content type, 422 for well-formed but invalid input. A ledger that cannot be reached
(PostgreSQL restarting, a connection cut mid-request) is a 503 ``unavailable`` with ``Retry-After: 1``:
nothing was committed, so the sender must try again (a 2xx always means committed). Anything else
unexpected is a 500 with a request id (logged), never a 4xx.
"""

from __future__ import annotations

import uuid
from typing import Any

import marshmallow as ma
import psycopg
import structlog
from flask import Flask, Response, jsonify
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from app.domain.operations import ActionNotRetryableError, AlarmEndedError, AlarmNotFoundError
from app.ledger.session import is_unreachable

log = structlog.get_logger(__name__)
LEDGER_RETRY_AFTER_S = 1


# What a 422 says about one field: its messages, or, for a nested object or a list, the same shape
# again keyed by the inner field's name or the item's index (`{"events": {"0": ["..."]}}`).
FIELD_MESSAGES = {
    "anyOf": [
        {"type": "array", "items": {"type": "string"}},
        {"type": "object", "additionalProperties": True},
    ]
}


def field_messages(**kwargs: Any) -> ma.fields.Dict:
    """`{field: messages}` as marshmallow reports it (documented as FIELD_MESSAGES), under the key
    ``fields``: the attribute holding it cannot be named so (``Schema.fields`` is marshmallow's)."""
    return ma.fields.Dict(
        keys=ma.fields.String(),
        data_key="fields",
        metadata={"additionalProperties": FIELD_MESSAGES, **kwargs},
    )


class ErrorSchema(ma.Schema):
    """The error envelope of every 4xx/5xx (documented in /openapi.json; error_response builds it)."""

    error = ma.fields.String(required=True)
    message = ma.fields.String(required=True)
    field_errors = field_messages(description="422 only: each bad field with its messages")


class ApiError(Exception):
    """An error a view raises on purpose; the status and code are part of the API."""

    def __init__(self, status: int, error: str, message: str, fields: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.fields = fields


def error_response(status: int, error: str, message: str, fields: dict[str, Any] | None = None) -> Response:
    """The JSON error envelope."""
    body: dict[str, Any] = {"error": error, "message": message}
    if fields is not None:
        body["fields"] = fields
    response = jsonify(body)
    response.status_code = status
    return response


def register(app: Flask) -> None:
    """Map exceptions to the envelope."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        response = error_response(exc.status, exc.error, exc.message, exc.fields)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.errorhandler(ma.ValidationError)
    def _invalid(exc: ma.ValidationError) -> Response:
        return error_response(422, "invalid_request", "the request failed validation", invalid_fields(exc))

    @app.errorhandler(AlarmNotFoundError)
    def _not_found(exc: AlarmNotFoundError) -> Response:
        return error_response(404, "not_found", str(exc))

    @app.errorhandler(AlarmEndedError)
    @app.errorhandler(ActionNotRetryableError)
    def _conflict(exc: Exception) -> Response:
        return error_response(409, "conflict", str(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        name = (exc.name or "error").lower().replace(" ", "_")
        return error_response(status, name, exc.description or name)

    @app.errorhandler(sa_exc.DBAPIError)
    @app.errorhandler(psycopg.OperationalError)
    def _ledger_error(exc: Exception) -> Response:
        if not ledger_unreachable(exc):
            return _unexpected(exc)
        request_id = structlog.contextvars.get_contextvars().get("request_id") or uuid.uuid4().hex[:16]
        cause = getattr(exc, "orig", None) or exc
        log.warning(
            "web.ledger_unavailable",
            request_id=request_id,
            error_type=type(cause).__name__,
            error=str(cause).splitlines()[0][:200] if str(cause) else "",
        )
        response = error_response(
            503,
            "unavailable",
            f"the ledger is unavailable; try again (a repeated event is recognised); request id {request_id}",
        )
        response.headers["Retry-After"] = str(LEDGER_RETRY_AFTER_S)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        request_id = structlog.contextvars.get_contextvars().get("request_id") or uuid.uuid4().hex[:16]
        log.exception("web.unhandled_error", request_id=request_id, error_type=type(exc).__name__)
        return error_response(500, "internal_error", f"unexpected error; request id {request_id}")


def invalid_fields(exc: ma.ValidationError) -> dict[str, Any]:
    """Each invalid field with its messages, the ``fields`` of a 422 (``_schema`` for the whole body)."""
    messages = exc.normalized_messages()  # type: ignore[no-untyped-call]  # marshmallow leaves it unannotated
    return messages if isinstance(messages, dict) else {"_schema": messages}


def ledger_unreachable(exc: BaseException) -> bool:
    """Whether a database error is a 503 (the ledger cannot be reached now) rather than a 500 (a bug).

    The rule is ``app.ledger.session.is_unreachable``, shared with the DC-09 receiver's NAK.
    """
    return is_unreachable(exc)
