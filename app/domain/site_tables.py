"""The marshmallow fields and schema base every table of the sites file is read with.

``app.domain.sites_file`` declares the generic tables (sources, plans, sites) with these, and each
vendor package (``vendors/*/site.py``) declares its own ``[sites.<key>.<vendor>]`` table with the
same ones, so a vendor's table reports its problems in the same words: one line each, naming the
file, table and key. Marshmallow collects every problem of a table; ``problems`` turns its nested
messages into those lines, in the order the file is read.
"""

import difflib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Generic, TypeVar, cast

from marshmallow import EXCLUDE, Schema, ValidationError, fields, missing

from app.domain.plan_keys import PLAN_KEYS, format_duration

_T = TypeVar("_T")
# Marshmallow's error messages: a list at a key, or tables of them (an int key is an array index).
Messages = list[str] | dict[str | int, Any]

_DURATION_PATTERN = re.compile(r"(?:(\d{1,6})h)?(?:(\d{1,6})m)?(?:(\d{1,6})s)?")
_E164_PATTERN = re.compile(r"\+?[1-9][0-9]{7,14}")
_IDENTIFIER_PATTERN = re.compile(r"[^\s,]{1,64}")


@dataclass(frozen=True, slots=True)
class Location:
    """Where responders go. Names follow TrackTik's ``location`` (seed 000) in snake case.

    There is always an ``address_line1`` or a ``latitude`` and ``longitude`` (TrackTik's minimum).
    ``country`` is an ISO 3166 alpha-2 code, as TrackTik and RapidSOS both ask.
    """

    name: str | None = None
    address_line1: str | None = None
    address_line2: str | None = None
    city: str | None = None
    state: str | None = None
    country: str | None = None
    postal_code: str | None = None
    latitude: float | None = None
    longitude: float | None = None


def normalise(identifier: str) -> str:
    """An identifier as routing compares it: without surrounding spaces, in any case."""
    return identifier.strip().casefold()


def parse_duration(text: str) -> timedelta | None:
    """``"90s"``, ``"2m"``, ``"1h"`` or a combination such as ``"1m30s"``; None if ``text`` is not one."""
    match = _DURATION_PATTERN.fullmatch(text.strip())
    if match is None or not any(match.groups()):
        return None
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


_TOML_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (list, "an array"),
    (dict, "a table"),
)


def toml_type(value: object) -> str:
    """How the file's reader names the type of ``value`` in a message ("a string", "a table")."""
    return next((name for kind, name in _TOML_TYPES if isinstance(value, kind)), "a date or time")


def show(value: object) -> str:
    """A value as it would read in the file (strings in double quotes)."""
    if isinstance(value, str | bool | int | float):
        return json.dumps(value, ensure_ascii=False)
    return toml_type(value)


def unknown_key(key: str, allowed: Sequence[str]) -> str:
    """The message for a key a table does not take, with the closest allowed one as a hint."""
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f'did you mean "{close[0]}"?' if close else "expected one of " + ", ".join(allowed)
    return f"unknown key ({hint})"


def unknown_plan_key(key: str) -> str:
    """The message for a key that is not a plan key, in a plan or in a vendor's codes by plan key."""
    return unknown_key(key, sorted(PLAN_KEYS)) + ' (a family, "trouble" or "default")'


def problems(where: str, messages: Messages) -> Iterator[tuple[str, str]]:
    """Each (table.key, message) of marshmallow's nested ``messages`` for the table at ``where``.

    A string key is a key of the table, an int an index in an array, ``""`` the table itself.
    """
    if isinstance(messages, dict):
        for key, inner in messages.items():
            path = where if key == "" else f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}"
            yield from problems(path, inner)
    else:
        for message in messages:
            yield where, message


class Report:
    """Collects one line per problem: ``<file>: <table>.<key>: <message>``."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.lines.append(f"{self.file}: {where}: {message}")

    def read(
        self, where: str, schema: "TableSchema", raw: Mapping[str, object], *, unknown_keys: bool = True
    ) -> tuple[Any, dict[str | int, Any]]:
        """``raw`` read with ``schema``: (the values that are right, the problems by key)."""
        try:
            return load_table(schema, raw, unknown_keys=unknown_keys), {}
        except ValidationError as exc:
            messages = cast(dict[str | int, Any], exc.messages)
            self.extend(where, messages)
            return exc.valid_data or {}, messages

    def value(self, where: str, field: fields.Field[_T], raw: object) -> _T | None:
        """``raw`` read with ``field``, or what of it is right (None when nothing is)."""
        try:
            return field.deserialize(raw)
        except ValidationError as exc:
            self.extend(where, cast(Messages, exc.messages))
            return cast(_T | None, exc.valid_data)

    def extend(self, where: str, messages: Messages) -> None:
        for at, message in problems(where, messages):
            self.add(at, message)


class TableSchema(Schema):
    """A TOML table: its keys are the declared fields (or ``KEYS``), in the order they are read.

    Unknown keys are reported first, as "did you mean"; ``make`` builds the table's object once every
    value is right (marshmallow's ``post_load`` would also run with unknown keys reported).
    """

    KEYS: ClassVar[tuple[str, ...] | None] = None  # when the table takes keys other schemas read

    class Meta:
        unknown = EXCLUDE

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return cls.KEYS if cls.KEYS is not None else tuple(cls._declared_fields)

    def make(self, data: dict[str, Any]) -> object:
        """The table's value once it is valid: its values by key unless a schema builds an object."""
        return data


def load_table(schema: TableSchema, raw: Mapping[str, object], *, unknown_keys: bool = True) -> object:
    """``raw`` read with ``schema``; ``ValidationError`` holds every problem, unknown keys first.

    ``unknown_keys=False`` reads part of a table whose other keys another schema reports on.
    """
    allowed = schema.keys()
    unknown: dict[str | int, Any] = {
        key: [unknown_key(key, allowed)] for key in raw if unknown_keys and key not in allowed
    }
    try:
        data = schema.load(raw)
    except ValidationError as exc:
        messages = cast(dict[str | int, Any], exc.messages)
        raise ValidationError({**unknown, **messages}, valid_data=exc.valid_data) from None
    if unknown:
        raise ValidationError(unknown, valid_data=data)
    return schema.make(data)


class Value(fields.Field[_T], Generic[_T]):
    """A TOML value of one type; ``example`` completes "is required (...)" and "must be ..., not ..."."""

    expected: ClassVar[tuple[type, ...]] = (object,)

    def __init__(
        self,
        *,
        example: str,
        required: bool = False,
        load_default: object = missing,
        validate: Callable[[Any], object] | None = None,
    ) -> None:
        super().__init__(
            required=required,
            load_default=load_default,
            validate=validate,
            # marshmallow formats its messages: braces in an example are literal
            error_messages={"required": f"is required ({example})".replace("{", "{{").replace("}", "}}")},
        )
        self.example = example

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> _T:
        # A TOML boolean is a Python int; never accept one where a number is meant.
        if not isinstance(value, self.expected) or (isinstance(value, bool) and bool not in self.expected):
            raise ValidationError(f"must be {self.example}, not {toml_type(value)}")
        return self.convert(value, data or {})

    def convert(self, value: Any, data: Mapping[str, Any]) -> _T:
        """``value``, of the expected type, as the table holds it; ``ValidationError`` if it is wrong."""
        return value  # type: ignore[no-any-return]


def rule(predicate: Callable[[_T], bool], message: Callable[[_T], str]) -> Callable[[_T], None]:
    """A marshmallow validator: ``message(value)`` unless ``predicate(value)``."""

    def validator(value: _T) -> None:
        if not predicate(value):
            raise ValidationError(message(value))

    return validator


def one_of(choices: Sequence[str] | frozenset[str], message: Callable[[str], str]) -> Callable[[str], None]:
    """A validator for a text that must be one of ``choices``."""
    return rule(lambda value: value in choices, message)


class Text(Value[str]):
    """A string, without surrounding spaces, of ``min_length`` to ``max_length`` characters."""

    expected = (str,)

    def __init__(
        self, *, example: str = "a string", min_length: int = 1, max_length: int = 200, **kwargs: Any
    ) -> None:
        super().__init__(example=example, **kwargs)
        self.min_length, self.max_length = min_length, max_length

    def convert(self, value: str, data: Mapping[str, Any]) -> str:
        text = value.strip()
        if not self.min_length <= len(text) <= self.max_length:
            raise ValidationError(
                f"must be {self.min_length} to {self.max_length} characters, not {len(text)}"
            )
        return text


class Phone(Text):
    """An E.164 phone number (quoted in the file)."""

    def __init__(self, *, required: bool = False) -> None:
        super().__init__(
            example='an E.164 number like "+15145550100" (quote it)',
            required=required,
            validate=rule(
                lambda v: bool(_E164_PATTERN.fullmatch(v)),
                lambda v: f'{show(v)} is not an E.164 number like "+15145550100"',
            ),
        )


class Integer(Value[int]):
    expected = (int,)


class Number(Value[float]):
    """A number from ``low`` to ``high`` (an integer is taken as a float)."""

    expected = (int, float)

    def __init__(self, *, low: float, high: float) -> None:
        super().__init__(example=f"a number from {low:g} to {high:g}")
        self.low, self.high = low, high

    def convert(self, value: float, data: Mapping[str, Any]) -> float:
        if not self.low <= value <= self.high:
            raise ValidationError(f"{show(value)} is not between {self.low:g} and {self.high:g}")
        return float(value)


class Boolean(Value[bool]):
    expected = (bool,)

    def __init__(self, *, default: bool) -> None:
        super().__init__(example="true or false", load_default=default)


class Duration(Value[timedelta]):
    """``"90s"``, ``"2m"``, ``"1h30m"``: up to ``maximum``, and from ``minimum`` when one is given."""

    expected = (str,)

    def __init__(
        self,
        *,
        maximum: timedelta,
        minimum: timedelta | None = None,
        load_default: object = missing,
    ) -> None:
        super().__init__(example='a duration like "90s" or "2m"', load_default=load_default)
        self.maximum, self.minimum = maximum, minimum

    def convert(self, value: str, data: Mapping[str, Any]) -> timedelta:
        if value.strip().startswith("-"):
            raise ValidationError(f'{show(value)} is negative; durations start at "0s"')
        delta = parse_duration(value)
        if delta is None:
            raise ValidationError(f'{show(value)} is not a duration like "90s" or "2m"')
        if delta > self.maximum:
            raise ValidationError(
                f'{show(value)} is longer than the maximum of "{format_duration(self.maximum)}"'
            )
        if self.minimum is not None and delta < self.minimum:
            raise ValidationError(
                f'{show(value)} is shorter than the minimum of "{format_duration(self.minimum)}" '
                "(leave the key out to switch the check off)"
            )
        return delta


class Identifiers(Value[tuple[str, ...]]):
    """An array of distinct identifiers (no spaces or commas, 1 to 64 characters).

    A wrong item is reported and left out; the others are still read (routing checks use them).
    """

    expected = (list,)

    def __init__(self, *, example: str, required: bool = False) -> None:
        super().__init__(example=example, required=required, load_default=missing if required else ())

    def convert(self, value: list[object], data: Mapping[str, Any]) -> tuple[str, ...]:
        errors: list[str] = []
        found: list[str] = []
        seen: set[str] = set()
        for item in value:
            if not isinstance(item, str) or not _IDENTIFIER_PATTERN.fullmatch(item.strip()):
                errors.append(f"{show(item)} is not an identifier ({self.example})")
            elif normalise(item) in seen:
                errors.append(f"{show(item)} is listed twice")
            else:
                seen.add(normalise(item))
                found.append(item.strip())
        if self.required and not value:
            errors.append(f"must not be empty ({self.example})")
        errors.extend(self.refer(found))
        if errors:
            raise ValidationError(errors, valid_data=found)
        return tuple(found)

    def refer(self, identifiers: Sequence[str]) -> list[str]:
        """Problems with what the identifiers name (a subclass checks references)."""
        return []


class TableOf(Value[_T]):
    """A table read with its own schema (``[sites.<key>.location]``, a vendor's table, ...)."""

    expected = (dict,)

    def __init__(
        self, schema: Callable[[], TableSchema], *, example: str = "a table", required: bool = False
    ) -> None:
        super().__init__(example=example, required=required)
        self.schema = schema

    def convert(self, value: Mapping[str, object], data: Mapping[str, Any]) -> _T:
        return load_table(self.schema(), value)  # type: ignore[return-value]


class ArrayOf(Value[tuple[_T, ...]]):
    """An array whose items ``item`` reads: at most ``too_many[0]`` of them when ``too_many`` is given.

    ``salvage`` keeps what it can of a wrong item (e.g. a plan step whose only fault is a stray key).
    """

    expected = (list,)

    def __init__(
        self,
        item: fields.Field[_T],
        *,
        example: str,
        too_many: tuple[int, Callable[[int], str]] | None = None,
        salvage: Callable[[Any], _T | None] = lambda valid: None,
    ) -> None:
        super().__init__(example=example)
        self.item, self.too_many, self.salvage = item, too_many, salvage

    def convert(self, value: list[object], data: Mapping[str, Any]) -> tuple[_T, ...]:
        errors: dict[str | int, Any] = {}
        if self.too_many is not None and len(value) > self.too_many[0]:
            errors[""] = [self.too_many[1](len(value))]
        found: list[_T] = []
        for index, raw in enumerate(value):
            try:
                found.append(self.item.deserialize(raw))
            except ValidationError as exc:
                errors[index] = exc.messages
                if (kept := self.salvage(exc.valid_data)) is not None:
                    found.append(kept)
        if errors:
            raise ValidationError(errors, valid_data=found)
        return tuple(found)
