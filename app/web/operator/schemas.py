"""Request schemas for the operator API (unknown fields are refused: this is our own API)."""

from __future__ import annotations

import marshmallow as ma

from config.celery import DEFAULT_QUEUE, QUEUES


class SelftestRequestSchema(ma.Schema):
    """Ask for a self-test, optionally on a given queue (to check the `urgent` worker too)."""

    class Meta:
        unknown = ma.RAISE

    queue = ma.fields.String(load_default=DEFAULT_QUEUE, validate=ma.validate.OneOf(QUEUES))
