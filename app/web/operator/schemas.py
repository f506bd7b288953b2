"""Request schemas for the operator API (unknown fields are refused: this is our own API)."""

from __future__ import annotations

import marshmallow as ma

from config.celery import DEFAULT_QUEUE, QUEUES


class SelftestRequestSchema(ma.Schema):
    """Ask for a self-test, optionally on a given queue (to check the `urgent` worker too)."""

    class Meta:
        unknown = ma.RAISE

    queue = ma.fields.String(load_default=DEFAULT_QUEUE, validate=ma.validate.OneOf(QUEUES))


class AlarmListQuerySchema(ma.Schema):
    """Filters of the alarm queue (`GET /v1/alarms`)."""

    class Meta:
        unknown = ma.RAISE

    state = ma.fields.String(
        load_default="active",
        validate=ma.validate.OneOf(["active", "open", "needs_person", "ended", "all"]),
        metadata={"description": "active = open or needs_person"},
    )
    site = ma.fields.String(load_default=None)
    priority = ma.fields.String(
        load_default=None,
        validate=ma.validate.OneOf(["life_safety", "property", "technical", "informational"]),
    )
    unrouted = ma.fields.Boolean(load_default=None)
    needs_person = ma.fields.Boolean(load_default=None)
    opened_after = ma.fields.AwareDateTime(load_default=None)
    opened_before = ma.fields.AwareDateTime(load_default=None)
    limit = ma.fields.Integer(load_default=100, validate=ma.validate.Range(min=1, max=1000))
    offset = ma.fields.Integer(load_default=0, validate=ma.validate.Range(min=0))


class VerifyRequestSchema(ma.Schema):
    """An operator's verdict on an alarm."""

    class Meta:
        unknown = ma.RAISE

    verdict = ma.fields.String(required=True, validate=ma.validate.OneOf(["valid", "false", "none"]))


class EndRequestSchema(ma.Schema):
    """End an alarm; without an outcome: dispatched if a step reached a responder, else cancelled."""

    class Meta:
        unknown = ma.RAISE

    outcome = ma.fields.String(
        load_default=None,
        validate=ma.validate.OneOf(
            ["dispatched", "cancelled", "false_alarm", "verified", "unrouted", "test"]
        ),
    )


class EmptySchema(ma.Schema):
    """No fields."""

    class Meta:
        unknown = ma.RAISE


class ActionListQuerySchema(ma.Schema):
    """Filters of `GET /v1/actions` (the dead-letter view is `?state=failed`)."""

    class Meta:
        unknown = ma.RAISE

    state = ma.fields.String(
        load_default="failed",
        validate=ma.validate.OneOf(["pending", "queued", "running", "succeeded", "failed", "cancelled"]),
    )
    limit = ma.fields.Integer(load_default=100, validate=ma.validate.Range(min=1, max=1000))
    offset = ma.fields.Integer(load_default=0, validate=ma.validate.Range(min=0))
