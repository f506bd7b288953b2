"""The RapidSOS alert body of seed 004 as data, and the validator that checks a request against it.

Seed 004's "Body Params and Field Information" table is written down once, in `ALERT_SCHEMA`, with every
length, range, enum and asterisk it gives, so that the simulator's checks and the contract tests that
cover them can both be read against the seed line by line. The departures CONTRACTS Part A item 14
decides (the seed's own example sends `zip_code` and an emergency contact's `phone` as numbers, and
`country` as `"USA"`) are field kinds of their own (`ZIP_CODE`, `PHONE`) rather than exceptions in code.

The validator reports every bad field at once, keyed by its dotted path
(`variables.event.location.geodetic.latitude`, `variables.emergency_contacts[0].phone`), which is the
`errors` object of the simulator's 400 answer.
"""

import math
import re
from dataclasses import dataclass
from typing import Any

# Field kinds.
STRING, INTEGER, NUMBER, BOOLEAN, ENUM, OBJECT, ARRAY = (
    "string",
    "integer",
    "number",
    "boolean",
    "enum",
    "object",
    "array",
)
ZIP_CODE = "zip_code"  # a 5-digit string, or (seed 004's example) the same digits as a JSON integer
PHONE = "phone"  # an E.164 number as a string, or (seed 004's example) as a JSON integer

EMERGENCY_TYPES: tuple[str, ...] = (
    "BURGLARY",
    "HOLDUP",
    "SILENT_ALARM",
    "CRASH",
    "MEDICAL",
    "FIRE",
    "CO",
    "OTHER",
)
SITE_TYPES: tuple[str, ...] = ("RESIDENTIAL", "COMMERCIAL", "VEHICLE", "PERSONAL")

# E.164: up to 15 digits, no leading zero; seed 004's example `15555555555` has no "+", so it is optional.
_E164 = re.compile(r"\+?[1-9][0-9]{1,14}")
_ZIP = re.compile(r"[0-9]{5}")


@dataclass(frozen=True, slots=True)
class Field:
    """One field of the alert body: its kind and the constraints seed 004 documents for it.

    `fields` are an object's members (or, for an array, the members of each item, which must be
    objects). `one_of` names members of which an object must carry at least one (the location's
    `geodetic` / `civic`). `ms_timestamp` marks an epoch-milliseconds integer, for the sandbox's
    seconds-versus-milliseconds guard.
    """

    name: str
    kind: str
    required: bool = False
    min_length: int | None = None
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    fields: tuple["Field", ...] = ()
    one_of: tuple[str, ...] = ()
    ms_timestamp: bool = False


GEODETIC = Field(
    "geodetic",
    OBJECT,
    fields=(
        Field("latitude", NUMBER, required=True, minimum=-90, maximum=90),
        Field("longitude", NUMBER, required=True, minimum=-180, maximum=180),
        Field("uncertainty_radius", NUMBER, minimum=-1),
    ),
)
CIVIC = Field(
    "civic",
    OBJECT,
    fields=(
        Field("name", STRING, min_length=1, max_length=200),
        Field("street_1", STRING, required=True, min_length=1, max_length=200),
        Field("street_2", STRING, min_length=1, max_length=200),
        Field("city", STRING, required=True, min_length=1, max_length=30),
        Field("state", STRING, required=True, min_length=2, max_length=2),
        Field("country", STRING, required=True, min_length=1, max_length=30),
        Field("zip_code", ZIP_CODE, required=True),
    ),
)
EVENT = Field(
    "event",
    OBJECT,
    required=True,
    fields=(
        Field("source_id", STRING, required=True, min_length=1, max_length=100),
        Field("source", STRING),
        Field("incident_time", INTEGER, required=True, minimum=0, ms_timestamp=True),
        Field("dispatch_requested_time", INTEGER, minimum=0, ms_timestamp=True),
        Field("location", OBJECT, required=True, fields=(GEODETIC, CIVIC), one_of=("geodetic", "civic")),
        Field("emergency_type", ENUM, required=True, choices=EMERGENCY_TYPES),
        Field("site_type", ENUM, required=True, choices=SITE_TYPES),
    ),
)
EMERGENCY_CONTACT_FIELDS: tuple[Field, ...] = (
    Field("name", STRING, required=True),
    Field("phone", PHONE, required=True),
    Field("relationship", STRING),
    Field("language", STRING),
)
VARIABLES = Field(
    "variables",
    OBJECT,
    required=True,
    fields=(
        EVENT,
        Field("alarm_description", STRING),
        Field("zone_description", STRING),
        Field("alarm_permit_number", STRING),
        Field("visually_verified", BOOLEAN),
        Field("instructions", STRING),
        Field("service_provider_name", STRING),
        Field("site_phone", STRING),
        Field("emergency_contacts", ARRAY, fields=EMERGENCY_CONTACT_FIELDS),
    ),
)
ALERT_SCHEMA: tuple[Field, ...] = (
    Field("blocking", BOOLEAN, required=True),
    Field("callflow", STRING, required=True, min_length=1),
    VARIABLES,
)

Errors = dict[str, list[str]]


class AlertValidator:
    """Checks an alert body against `ALERT_SCHEMA` plus the simulator's configured guards."""

    def __init__(self, *, min_timestamp_ms: int = 0, callflows: tuple[str, ...] = ()) -> None:
        """
        Args:
            min_timestamp_ms: the smallest epoch-ms value a `ms_timestamp` field accepts (a sandbox
                guard against seconds; 0 = only the documented minimum).
            callflows: the callflow names this partner has agreed with RapidSOS; empty = any name.
        """
        self.min_timestamp_ms = min_timestamp_ms
        self.callflows = callflows

    def validate(self, body: dict[str, Any]) -> Errors:
        """Every problem of the body, keyed by dotted field path; empty when the body is valid."""
        errors: Errors = {}
        self._check_members(body, ALERT_SCHEMA, (), "", errors)
        callflow = body.get("callflow")
        if self.callflows and isinstance(callflow, str) and callflow and callflow not in self.callflows:
            _add(
                errors,
                "callflow",
                f"unknown callflow {callflow!r}; agreed flows: {', '.join(self.callflows)}",
            )
        return errors

    def _check_members(
        self,
        data: dict[str, Any],
        fields: tuple[Field, ...],
        one_of: tuple[str, ...],
        prefix: str,
        errors: Errors,
    ) -> None:
        for spec in fields:
            path = f"{prefix}{spec.name}"
            if spec.name not in data:
                if spec.required:
                    _add(errors, path, "is required")
                continue
            self._check_value(data[spec.name], spec, path, errors)
        if one_of and not any(name in data for name in one_of):
            _add(errors, prefix.rstrip("."), f"must provide one of {' or '.join(one_of)}")

    def _check_value(self, value: Any, spec: Field, path: str, errors: Errors) -> None:
        if value is None:
            _add(errors, path, f"must be {_article(spec.kind)}, not null (leave the field out instead)")
            return
        if spec.kind == OBJECT:
            if not isinstance(value, dict):
                _add(errors, path, "must be an object")
                return
            self._check_members(value, spec.fields, spec.one_of, f"{path}.", errors)
        elif spec.kind == ARRAY:
            self._check_array(value, spec, path, errors)
        else:
            problem = self._scalar_problem(value, spec)
            if problem:
                _add(errors, path, problem)

    def _check_array(self, value: Any, spec: Field, path: str, errors: Errors) -> None:
        if not isinstance(value, list):
            _add(errors, path, "must be an array")
            return
        for index, item in enumerate(value):
            item_path = f"{path}[{index}]"
            if not isinstance(item, dict):
                _add(errors, item_path, "must be an object")
                continue
            self._check_members(item, spec.fields, (), f"{item_path}.", errors)

    def _scalar_problem(self, value: Any, spec: Field) -> str | None:
        if spec.kind == BOOLEAN:
            return None if isinstance(value, bool) else "must be a boolean (true or false)"
        if spec.kind in (STRING, ENUM):
            if not isinstance(value, str):
                return "must be a string"
            if spec.kind == ENUM:
                return None if value in spec.choices else f"must be one of {', '.join(spec.choices)}"
            return _length_problem(value, spec)
        if spec.kind == INTEGER:
            return self._integer_problem(value, spec)
        if spec.kind == NUMBER:
            return _number_problem(value, spec)
        if spec.kind == ZIP_CODE:
            return _zip_code_problem(value)
        if spec.kind == PHONE:
            return _phone_problem(value)
        raise AssertionError(f"unknown field kind {spec.kind!r}")  # pragma: no cover - schema bug

    def _integer_problem(self, value: Any, spec: Field) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer" + (" (epoch milliseconds)" if spec.ms_timestamp else "")
        range_problem = _range_problem(value, spec)
        if range_problem:
            return range_problem
        if spec.ms_timestamp and value < self.min_timestamp_ms:
            return (
                f"{value} looks like epoch seconds; must be a millisecond UNIX timestamp "
                f"(at least {self.min_timestamp_ms} in this sandbox)"
            )
        return None


def _add(errors: Errors, path: str, message: str) -> None:
    errors.setdefault(path, []).append(message)


def _article(kind: str) -> str:
    return {
        STRING: "a string",
        ENUM: "a string",
        INTEGER: "an integer",
        NUMBER: "a number",
        BOOLEAN: "a boolean",
        OBJECT: "an object",
        ARRAY: "an array",
        ZIP_CODE: "a 5-digit zip code",
        PHONE: "an E.164 phone number",
    }[kind]


def _length_problem(value: str, spec: Field) -> str | None:
    low, high = spec.min_length, spec.max_length
    if low is not None and high is not None and low == high and len(value) != low:
        return f"must be exactly {low} characters (got {len(value)})"
    if low is not None and len(value) < low:
        return f"must be at least {low} characters (got {len(value)})"
    if high is not None and len(value) > high:
        return f"must be at most {high} characters (got {len(value)})"
    return None


def _number_problem(value: Any, spec: Field) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a number"
    if not math.isfinite(value):
        return "must be a finite number"
    return _range_problem(value, spec)


def _range_problem(value: float, spec: Field) -> str | None:
    if spec.minimum is not None and value < spec.minimum:
        return f"must be at least {spec.minimum:g} (got {value:g})"
    if spec.maximum is not None and value > spec.maximum:
        return f"must be at most {spec.maximum:g} (got {value:g})"
    return None


def _zip_code_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return "must be a 5-digit zip code string (or integer)"
    text = value if isinstance(value, str) else str(value)
    if len(text) != 5:
        return f"must be exactly 5 characters (got {len(text)})"
    if not _ZIP.fullmatch(text):
        return "must be 5 digits"
    return None


def _phone_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return "must be an E.164 phone number string (or integer)"
    text = value if isinstance(value, str) else str(value)
    if not _E164.fullmatch(text):
        return f"{text!r} is not an E.164 phone number (up to 15 digits, optional leading +)"
    return None
