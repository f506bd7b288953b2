"""Liveness and readiness: is the process up, and can it reach the ledger and the broker?

Both answer anyone, so they name what is down (the ledger's database, Redis) and the kind of failure,
never the error's text: that carries hosts, ports and paths. The text goes to the log.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
import structlog
from flask import Blueprint

from app.ledger.session import ping
from app.web.openapi import operation
from app.web.services import services

log = structlog.get_logger(__name__)
bp = Blueprint("health", __name__)


class BrokerNotConfiguredError(ConnectionError):
    """REDIS_URL is not set: there is no broker to ask."""


class HealthSchema(ma.Schema):
    """The answer of ``/healthz`` (documented in /openapi.json)."""

    status = ma.fields.String(required=True, validate=ma.validate.OneOf(["ok"]))


class ReadinessSchema(ma.Schema):
    """The answer of ``/readyz``, ready or not (documented in /openapi.json)."""

    status = ma.fields.String(required=True, validate=ma.validate.OneOf(["ready", "not_ready"]))
    checks = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.String(),
        required=True,
        metadata={"description": "`ok`, or `down: <reason>`, for `ledger` and `broker`"},
    )


@bp.get("/healthz")
@operation("Liveness", ok={200: ("alive", HealthSchema)})
def report_alive() -> tuple[dict[str, Any], int]:
    """The process answers: restart it only when this fails."""
    return {"status": "ok"}, 200


@bp.get("/readyz")
@operation(
    "Readiness: ledger and broker",
    ok={200: ("ready", ReadinessSchema), 503: ("names what is down", ReadinessSchema)},
)
def report_ready() -> tuple[dict[str, Any], int]:
    """200 when the ledger and the broker both answer, else 503 naming what is down."""
    svc = services()
    checks: dict[str, str] = {}
    try:
        ping(svc.engine)
        checks["ledger"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; the reason is reported
        checks["ledger"] = f"down: {svc.engine.dialect.name} did not answer ({type(exc).__name__})"
        log.warning("readyz.ledger_down", error_type=type(exc).__name__, error=str(exc)[:500])
    try:
        svc.ping_broker()
        checks["broker"] = "ok"
    except BrokerNotConfiguredError:
        checks["broker"] = "down: redis is not configured (REDIS_URL is not set)"
    except Exception as exc:  # noqa: BLE001 - as above
        checks["broker"] = f"down: redis did not answer ({type(exc).__name__})"
        log.warning("readyz.broker_down", error_type=type(exc).__name__, error=str(exc)[:500])
    ready = all(value == "ok" for value in checks.values())
    return {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503
