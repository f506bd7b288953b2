"""Request schemas for the operator API (unknown fields are refused: this is our own API)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import marshmallow as ma

from config.celery import DEFAULT_QUEUE, QUEUES
from vendors import BY_HAND, BY_HAND_CREATES, UPSTREAM_IDS

# The ledger's ids are PostgreSQL `integer`: the routes take no larger id (a larger one is a 404, not
# a database error).
LEDGER_ID_MAX = 2**31 - 1
# No page can start past the last id the ledger can hold; beyond it an offset overflowed SQLite's
# integers and PostgreSQL's bigint (a 500), now it is a 422 naming the field.
OFFSET_MAX = LEDGER_ID_MAX
PAGE_LIMIT_MAX = 1000
# What the sites file accepts as a site key (app/domain/sites_file.py): anything else matches no alarm,
# and a NUL would reach PostgreSQL as an error.
SITE_KEY = r"[a-z0-9][a-z0-9_-]{0,63}\Z"
# The API's descriptions give examples in the vendors' own words (their declarations in vendors/).
_EXAMPLE_STEP = next(iter(BY_HAND_CREATES))
_BY_HAND = " or ".join(f"a {entry.vendor} {entry.what}" for entry in BY_HAND)


class UtcDateTime(ma.fields.AwareDateTime):
    """An aware date-time in any offset, loaded as UTC (the ledger's zone).

    A time whose UTC instant falls outside years 1 to 9999 (``0001-01-01T00:00:00+14:00``) cannot be
    compared with the ledger's: it is refused here, naming the field, instead of overflowing later.
    """

    default_error_messages = {  # marshmallow merges it with the parent's messages
        "out_of_range": "Not a time the ledger can compare: in UTC it falls outside years 1 to 9999."
    }

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> datetime:
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            raise self.make_error("out_of_range") from None


class PageQuerySchema(ma.Schema):
    """``limit`` and ``offset`` of a list, both bounded; unknown parameters are refused."""

    class Meta:
        unknown = ma.RAISE

    limit = ma.fields.Integer(load_default=100, validate=ma.validate.Range(min=1, max=PAGE_LIMIT_MAX))
    offset = ma.fields.Integer(
        load_default=0,
        validate=ma.validate.Range(min=0, max=OFFSET_MAX),
        metadata={"description": "rows to skip (a deep page is better found with the filters)"},
    )


class SelftestRequestSchema(ma.Schema):
    """Ask for a self-test, optionally on a given queue (to check the `urgent` worker too)."""

    class Meta:
        unknown = ma.RAISE

    queue = ma.fields.String(load_default=DEFAULT_QUEUE, validate=ma.validate.OneOf(QUEUES))


class AlarmListQuerySchema(PageQuerySchema):
    """Filters of the alarm queue (`GET /v1/alarms`)."""

    state = ma.fields.String(
        load_default="active",
        validate=ma.validate.OneOf(["active", "open", "needs_person", "ended", "all"]),
        metadata={
            "description": "active = open or needs_person, and the ended alarms a person must still "
            "act on (needs_person true, e.g. a responder to recall by hand); needs_person holds "
            "those ended alarms too"
        },
    )
    site = ma.fields.String(load_default=None, validate=ma.validate.Regexp(SITE_KEY, error="Not a site key."))
    priority = ma.fields.String(
        load_default=None,
        validate=ma.validate.OneOf(["life_safety", "property", "technical", "informational"]),
    )
    unrouted = ma.fields.Boolean(load_default=None)
    needs_person = ma.fields.Boolean(
        load_default=None,
        metadata={"description": "the needs-a-person list (with state=active, ended alarms included)"},
    )
    opened_after = UtcDateTime(load_default=None)
    opened_before = UtcDateTime(load_default=None)


class VerifyRequestSchema(ma.Schema):
    """An operator's verdict on an alarm."""

    class Meta:
        unknown = ma.RAISE

    verdict = ma.fields.String(required=True, validate=ma.validate.OneOf(["valid", "false", "none"]))


class EndRequestSchema(ma.Schema):
    """End an alarm; without an outcome: verified if an operator verified it valid, else dispatched if
    a step reached a responder, else cancelled."""

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


class ActionListQuerySchema(PageQuerySchema):
    """Filters of `GET /v1/actions` (the dead-letter view is `?state=failed`)."""

    state = ma.fields.String(
        load_default="failed",
        validate=ma.validate.OneOf(["pending", "queued", "running", "succeeded", "failed", "cancelled"]),
    )


# -- answers (documented in /openapi.json; the views build them from app.ledger.queries) -------------
# Every key is always present, hence ``required``; a value the ledger may not have yet is nullable.


class TimelineLineSchema(ma.Schema):
    """One line of an alarm's or an action's timeline."""

    at = ma.fields.AwareDateTime(required=True)
    kind = ma.fields.String(required=True)
    what = ma.fields.String(required=True)
    action_id = ma.fields.Integer(required=True, allow_none=True)
    event_id = ma.fields.Integer(required=True, allow_none=True)


class ActionSchema(ma.Schema):
    """One step of an alarm's plan, as the alarm shows it."""

    id = ma.fields.Integer(required=True)
    kind = ma.fields.String(required=True, metadata={"description": f"the task name, e.g. {_EXAMPLE_STEP}"})
    queue = ma.fields.String(required=True)
    state = ma.fields.String(
        required=True,
        validate=ma.validate.OneOf(["pending", "queued", "running", "succeeded", "failed", "cancelled"]),
    )
    due_at = ma.fields.AwareDateTime(required=True)
    attempts = ma.fields.Integer(required=True)
    cancellable = ma.fields.Boolean(required=True)
    external_id = ma.fields.String(required=True, allow_none=True)
    last_error = ma.fields.String(required=True, allow_none=True)


class ActionViewSchema(ActionSchema):
    """One action with its outcome and timeline (a retried action, a self-test)."""

    alarm_id = ma.fields.Integer(
        required=True, allow_none=True, metadata={"description": "null: a system action"}
    )
    completed_at = ma.fields.AwareDateTime(required=True, allow_none=True)
    result = ma.fields.Dict(required=True, allow_none=True)
    timeline = ma.fields.List(ma.fields.Nested(TimelineLineSchema), required=True)


class ActionRowSchema(ActionSchema):
    """One action of `GET /v1/actions`."""

    alarm_id = ma.fields.Integer(required=True, allow_none=True)
    updated_at = ma.fields.AwareDateTime(required=True)


class ActionListSchema(ma.Schema):
    """`GET /v1/actions`: newest first."""

    actions = ma.fields.List(ma.fields.Nested(ActionRowSchema), required=True)
    limit = ma.fields.Integer(required=True)
    offset = ma.fields.Integer(required=True)


class AlarmSummarySchema(ma.Schema):
    """An alarm as the queue lists it."""

    id = ma.fields.Integer(required=True)
    state = ma.fields.String(required=True, validate=ma.validate.OneOf(["open", "needs_person", "ended"]))
    outcome = ma.fields.String(required=True, allow_none=True)
    site = ma.fields.String(required=True, allow_none=True, metadata={"description": "null: unrouted"})
    source = ma.fields.String(required=True, allow_none=True)
    account = ma.fields.String(required=True, allow_none=True)
    zone = ma.fields.String(required=True, allow_none=True)
    code = ma.fields.String(required=True, allow_none=True)
    description = ma.fields.String(required=True, allow_none=True)
    family = ma.fields.String(required=True)
    priority = ma.fields.String(required=True)
    routed = ma.fields.Boolean(required=True)
    needs_person = ma.fields.Boolean(
        required=True,
        metadata={
            "description": "something only a person can resolve is pending: state needs_person, or an "
            "ended alarm raised to a person after its end (a responder to recall by hand, a step whose "
            "answer was lost), until an operator acknowledges it"
        },
    )
    needs_person_reason = ma.fields.String(required=True, allow_none=True)
    verification = ma.fields.String(required=True, allow_none=True)
    event_count = ma.fields.Integer(required=True)
    opened_at = ma.fields.AwareDateTime(required=True)
    last_event_at = ma.fields.AwareDateTime(required=True)
    restored_at = ma.fields.AwareDateTime(required=True, allow_none=True)
    verified_at = ma.fields.AwareDateTime(required=True, allow_none=True)
    acknowledged_at = ma.fields.AwareDateTime(required=True, allow_none=True)
    ended_at = ma.fields.AwareDateTime(required=True, allow_none=True)
    panel_cancelled_at = ma.fields.AwareDateTime(
        required=True,
        allow_none=True,
        metadata={
            "description": f"a panel's cancel stood the response down in time while {_BY_HAND} "
            "was engaged: acknowledging the alarm, or ending it without an outcome, ends it as "
            "cancelled unless an operator verified it valid since (an End with an outcome keeps the "
            "operator's); what the bridge created that "
            "lands afterwards is stood down, unless the operator ended it as real: then a person decides"
        },
    )
    refs = ma.fields.Dict(
        required=True,
        metadata={"description": f"the upstreams' ids: {', '.join(list(UPSTREAM_IDS.values())[:2])}…"},
    )


class AlarmEventSchema(ma.Schema):
    """One event an alarm absorbed."""

    event_id = ma.fields.Integer(required=True)
    source = ma.fields.String(required=True)
    code = ma.fields.String(required=True, allow_none=True)
    zone = ma.fields.String(required=True, allow_none=True)
    received_at = ma.fields.AwareDateTime(required=True)
    occurred_at = ma.fields.AwareDateTime(required=True, allow_none=True)
    clock_skew_s = ma.fields.Float(required=True, allow_none=True)


class AlarmDetailSchema(AlarmSummarySchema):
    """One alarm with its events, every action and the timeline."""

    events = ma.fields.List(ma.fields.Nested(AlarmEventSchema), required=True)
    actions = ma.fields.List(ma.fields.Nested(ActionSchema), required=True)
    timeline = ma.fields.List(ma.fields.Nested(TimelineLineSchema), required=True)


class AlarmListSchema(ma.Schema):
    """`GET /v1/alarms`: life-safety first, then oldest."""

    alarms = ma.fields.List(ma.fields.Nested(AlarmSummarySchema), required=True)
    limit = ma.fields.Integer(required=True)
    offset = ma.fields.Integer(required=True)


class SelftestReceiptSchema(ma.Schema):
    """The answer to `POST /v1/system/selftest`: poll `status_url`."""

    action_id = ma.fields.Integer(required=True)
    queue = ma.fields.String(required=True)
    status_url = ma.fields.String(required=True)
