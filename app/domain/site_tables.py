"""What every table of the sites file is read with: the problem report, the table reader, the location.

``app.domain.sites_file`` reads the generic tables (sources, plans, sites) with these, and each vendor
package (``vendors/*/site.py``) reads its own ``[sites.<key>.<vendor>]`` table with the same ones, so
a vendor's table reports its problems in the same words, one line each, with the file, table and key.
"""

import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from app.domain.plan_keys import format_duration

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


class Report:
    """Collects one line per problem: ``<file>: <table>.<key>: <message>``."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.lines.append(f"{self.file}: {where}: {message}")


class Table:
    """One TOML table being read. Each getter records a problem and returns None on bad input."""

    def __init__(self, report: Report, where: str, raw: Mapping[str, object], allowed: Iterable[str]) -> None:
        self.report = report
        self.where = where
        self.raw = raw
        allowed = tuple(allowed)
        for key in raw:
            if key not in allowed:
                report.add(self.at(key), unknown_key(key, allowed))

    def at(self, key: str) -> str:
        return f"{self.where}.{key}"

    def _get(self, key: str, required: bool, expected: type | tuple[type, ...], example: str) -> object:
        value = self.raw.get(key)
        if value is None:
            if required:
                self.report.add(self.at(key), f"is required ({example})")
            return None
        # A TOML boolean is a Python int; never accept one where a number is meant.
        if not isinstance(value, expected) or (isinstance(value, bool) and bool not in _as_tuple(expected)):
            self.report.add(self.at(key), f"must be {example}, not {toml_type(value)}")
            return None
        return value

    def text(
        self,
        key: str,
        *,
        required: bool = False,
        example: str = "a string",
        min_length: int = 1,
        max_length: int = 200,
    ) -> str | None:
        value = self._get(key, required, str, example)
        if value is None:
            return None
        text = cast(str, value).strip()
        if not min_length <= len(text) <= max_length:
            self.report.add(self.at(key), f"must be {min_length} to {max_length} characters, not {len(text)}")
            return None
        return text

    def integer(self, key: str, *, required: bool = False, example: str = "an integer") -> int | None:
        return cast(int | None, self._get(key, required, int, example))

    def number(self, key: str, *, low: float, high: float) -> float | None:
        value = self._get(key, False, (int, float), f"a number from {low:g} to {high:g}")
        if value is None:
            return None
        number = float(cast(float, value))
        if not low <= number <= high:
            self.report.add(self.at(key), f"{show(value)} is not between {low:g} and {high:g}")
            return None
        return number

    def boolean(self, key: str, *, default: bool) -> bool:
        value = self._get(key, False, bool, "true or false")
        return default if value is None else cast(bool, value)

    def duration(self, key: str, *, default: timedelta, maximum: timedelta) -> timedelta | None:
        value = self._get(key, False, str, 'a duration like "90s" or "2m"')
        if value is None:
            return None if key in self.raw else default
        return duration_value(self.report, self.at(key), cast(str, value), maximum)

    def table(
        self, key: str, *, required: bool = False, example: str = "a table"
    ) -> Mapping[str, object] | None:
        return cast(Mapping[str, object] | None, self._get(key, required, dict, example))

    def array(self, key: str, *, required: bool = False, example: str = "an array") -> list[object] | None:
        return cast(list[object] | None, self._get(key, required, list, example))

    def identifiers(self, key: str, *, required: bool = False, example: str) -> tuple[str, ...]:
        """An array of distinct identifiers (no spaces or commas, 1 to 64 characters)."""
        items = self.array(key, required=required, example=example)
        if items is None:
            return ()
        found: list[str] = []
        seen: set[str] = set()
        for item in items:
            if not isinstance(item, str) or not _IDENTIFIER_PATTERN.fullmatch(item.strip()):
                self.report.add(self.at(key), f"{show(item)} is not an identifier ({example})")
                continue
            if normalise(item) in seen:
                self.report.add(self.at(key), f"{show(item)} is listed twice")
                continue
            seen.add(normalise(item))
            found.append(item.strip())
        if required and not items:
            self.report.add(self.at(key), f"must not be empty ({example})")
        return tuple(found)


def _as_tuple(expected: type | tuple[type, ...]) -> tuple[type, ...]:
    return expected if isinstance(expected, tuple) else (expected,)


def unknown_key(key: str, allowed: Sequence[str]) -> str:
    """The message for a key a table does not take, with the closest allowed one as a hint."""
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f'did you mean "{close[0]}"?' if close else "expected one of " + ", ".join(allowed)
    return f"unknown key ({hint})"


def duration_value(report: Report, where: str, text: str, maximum: timedelta) -> timedelta | None:
    """``text`` as a duration up to ``maximum``; None after reporting why it is not one."""
    if text.strip().startswith("-"):
        report.add(where, f'{show(text)} is negative; durations start at "0s"')
        return None
    delta = parse_duration(text)
    if delta is None:
        report.add(where, f'{show(text)} is not a duration like "90s" or "2m"')
        return None
    if delta > maximum:
        report.add(where, f'{show(text)} is longer than the maximum of "{format_duration(maximum)}"')
        return None
    return delta


def phone(report: Report, table: Table, key: str, *, required: bool) -> str | None:
    """An E.164 phone number (quoted in the file); None after reporting a malformed one."""
    phone = table.text(key, required=required, example='an E.164 number like "+15145550100" (quote it)')
    if phone is not None and not _E164_PATTERN.fullmatch(phone):
        report.add(table.at(key), f'{show(phone)} is not an E.164 number like "+15145550100"')
        return None
    return phone
