"""Loading and validating the sites file (``SITES_FILE``) into a ``Sites`` directory.

Every problem is reported on one line naming the file, the table and the key, and all of them are
reported together, because an integrator fixing a file one error per restart loses an afternoon. A
file that loads is safe to run: every source can authenticate, every site can be routed to, every plan
step has the vendor settings it needs, and no life-safety alarm can be held for a cancel window. The
environment is handed in (only ``config/settings.py`` reads ``os.environ``); secret values never appear
in an error message.
"""

import base64
import binascii
import difflib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.domain.plans import (
    DEFAULT_KEY,
    PLAN_KEYS,
    Plan,
    Step,
    format_duration,
    plan_problems,
)
from app.domain.sites import (
    ACCOUNT_SOURCE_KINDS,
    DC09_KEY_BYTES,
    DEFAULT_CANCEL_WINDOW,
    DEFAULT_TEST_GRACE,
    DEFAULT_TIMESTAMP_FUTURE,
    DEFAULT_TIMESTAMP_PAST,
    GEODETIC_SITE_TYPES,
    MAX_CANCEL_WINDOW,
    MAX_EMERGENCY_CONTACTS,
    MAX_LINK_SUPERVISION,
    MAX_TEST_GRACE,
    MAX_TEST_INTERVAL,
    MAX_TIMESTAMP_BAND,
    MIN_LINK_SUPERVISION,
    MIN_TEST_INTERVAL,
    MIN_TOKEN_LENGTH,
    RAPIDSOS_CIVIC,
    RAPIDSOS_CIVIC_REQUIRED,
    SIGNING_SECRET_BYTES,
    SIGNING_SECRET_PREFIX,
    SITE_TYPES,
    SOURCE_KINDS,
    STEP_VENDOR_TABLES,
    CallOnAlarmSite,
    EmergencyContact,
    Location,
    RapidSOSSite,
    Site,
    Sites,
    SitesFileError,
    Source,
    SourceKind,
    Supervision,
    TrackTikSite,
    _normalise,
    _route_index,
)


@dataclass(frozen=True, slots=True)
class _SiteRoutes:
    """The routing part of a site as read, kept even when the site has other errors."""

    key: str
    sources: tuple[str, ...]
    accounts: tuple[str, ...]
    alta_zones: tuple[str, ...]


_COUNTRY_PATTERN = re.compile(r"[A-Z]{2}")
_DC09_ACCOUNT_PATTERN = re.compile(r"[0-9A-Fa-f]{3,16}")  # DC-09 accounts: 3 to 16 hex digits
_HEX_PATTERN = re.compile(r"[0-9A-Fa-f]+")
_DURATION_PATTERN = re.compile(r"(?:(\d{1,6})h)?(?:(\d{1,6})m)?(?:(\d{1,6})s)?")
_E164_PATTERN = re.compile(r"\+?[1-9][0-9]{7,14}")
_ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IDENTIFIER_PATTERN = re.compile(r"[^\s,]{1,64}")
_KEY_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_TOKEN_PATTERN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: fits a header and a URL


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


def _toml_type(value: object) -> str:
    return next((name for kind, name in _TOML_TYPES if isinstance(value, kind)), "a date or time")


def _show(value: object) -> str:
    """A value as it would read in the file (strings in double quotes)."""
    if isinstance(value, str | bool | int | float):
        return json.dumps(value, ensure_ascii=False)
    return _toml_type(value)


class _Report:
    """Collects one line per problem: ``<file>: <table>.<key>: <message>``."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.lines.append(f"{self.file}: {where}: {message}")


class _Table:
    """One TOML table being read. Each getter records a problem and returns None on bad input."""

    def __init__(
        self, report: _Report, where: str, raw: Mapping[str, object], allowed: Iterable[str]
    ) -> None:
        self.report = report
        self.where = where
        self.raw = raw
        allowed = tuple(allowed)
        for key in raw:
            if key not in allowed:
                report.add(self.at(key), _unknown_key(key, allowed))

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
            self.report.add(self.at(key), f"must be {example}, not {_toml_type(value)}")
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
            self.report.add(self.at(key), f"{_show(value)} is not between {low:g} and {high:g}")
            return None
        return number

    def boolean(self, key: str, *, default: bool) -> bool:
        value = self._get(key, False, bool, "true or false")
        return default if value is None else cast(bool, value)

    def duration(self, key: str, *, default: timedelta, maximum: timedelta) -> timedelta | None:
        value = self._get(key, False, str, 'a duration like "90s" or "2m"')
        if value is None:
            return None if key in self.raw else default
        return _duration(self.report, self.at(key), cast(str, value), maximum)

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
                self.report.add(self.at(key), f"{_show(item)} is not an identifier ({example})")
                continue
            if _normalise(item) in seen:
                self.report.add(self.at(key), f"{_show(item)} is listed twice")
                continue
            seen.add(_normalise(item))
            found.append(item.strip())
        if required and not items:
            self.report.add(self.at(key), f"must not be empty ({example})")
        return tuple(found)


def _as_tuple(expected: type | tuple[type, ...]) -> tuple[type, ...]:
    return expected if isinstance(expected, tuple) else (expected,)


def _unknown_key(key: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f'did you mean "{close[0]}"?' if close else "expected one of " + ", ".join(allowed)
    return f"unknown key ({hint})"


def _duration(report: _Report, where: str, text: str, maximum: timedelta) -> timedelta | None:
    if text.strip().startswith("-"):
        report.add(where, f'{_show(text)} is negative; durations start at "0s"')
        return None
    delta = parse_duration(text)
    if delta is None:
        report.add(where, f'{_show(text)} is not a duration like "90s" or "2m"')
        return None
    if delta > maximum:
        report.add(where, f'{_show(text)} is longer than the maximum of "{format_duration(maximum)}"')
        return None
    return delta


def _check_key(report: _Report, table: str, key: str) -> bool:
    if _KEY_PATTERN.fullmatch(key):
        return True
    report.add(
        f"{table}.{json.dumps(key, ensure_ascii=False)}",
        "names are 1 to 64 lower-case letters, digits, '-' or '_', starting with a letter or digit",
    )
    return False


_SUPERVISION_KEYS = ("link_supervision", "test_interval", "test_grace")
_DC09_SOURCE_KEYS = ("encryption_keys_env", "encryption_keys_format", "timestamp_band")
_SOURCE_KEYS = ("kind", "token_env", "signing_secrets_env", *_SUPERVISION_KEYS, *_DC09_SOURCE_KEYS)


def _env_values(report: _Report, where: str, name: str, environ: Mapping[str, str]) -> tuple[str, ...] | None:
    """The comma-separated values of environment variable ``name``; a problem if unset or empty."""
    if not _ENV_NAME_PATTERN.fullmatch(name):
        report.add(where, f"{_show(name)} is not an environment variable name")
        return None
    raw = environ.get(name)
    if raw is None:
        report.add(where, f"environment variable {name} is not set")
        return None
    values = tuple(dict.fromkeys(v.strip() for v in raw.split(",") if v.strip()))
    if not values:
        report.add(where, f"environment variable {name} is empty")
        return None
    return values


def _load_source(
    report: _Report, key: str, raw: Mapping[str, object], environ: Mapping[str, str]
) -> Source | None:
    where = f"sources.{key}"
    table = _Table(report, where, raw, _SOURCE_KEYS)
    kind = table.text("kind", required=True, example='"panel", "alta" or "dc09"')
    if kind is not None and kind not in SOURCE_KINDS:
        report.add(table.at("kind"), f'{_show(kind)} is not "panel", "alta" or "dc09"')
        kind = None
    if kind == "dc09":
        return _load_dc09_source(report, key, table, environ)
    for dc09_key in _DC09_SOURCE_KEYS if kind is not None else ():
        if dc09_key in raw:
            report.add(table.at(dc09_key), f"is for a dc09 source (the receiver), not a {kind} source")
    token_env = table.text("token_env", example='a variable name like "ACME_PANELS_TOKEN"')
    secrets_env = table.text("signing_secrets_env", example='a variable name like "ACME_PANELS_WHSEC"')
    if "token_env" not in raw and "signing_secrets_env" not in raw:
        report.add(
            table.at("token_env"),
            "is required unless signing_secrets_env is set (every source authenticates)",
        )
    tokens: tuple[str, ...] | None = ()
    secrets: tuple[str, ...] | None = ()
    if token_env is not None:
        tokens = _env_values(report, table.at("token_env"), token_env, environ)
        for number, token in enumerate(tokens or (), start=1):
            # Never the value itself: error messages end up in logs.
            if len(token) < MIN_TOKEN_LENGTH or not _TOKEN_PATTERN.fullmatch(token):
                report.add(
                    table.at("token_env"),
                    f"token {number} in {token_env} must be at least {MIN_TOKEN_LENGTH} printable ASCII "
                    "characters without spaces",
                )
                tokens = None
    if secrets_env is not None:
        secrets = _env_values(report, table.at("signing_secrets_env"), secrets_env, environ)
        for number, secret in enumerate(secrets or (), start=1):
            if not _is_signing_secret(secret):
                report.add(
                    table.at("signing_secrets_env"),
                    f'secret {number} in {secrets_env} is not a Standard Webhooks secret ("whsec_" then the '
                    f"base64 of {SIGNING_SECRET_BYTES.start} to {SIGNING_SECRET_BYTES.stop - 1} bytes)",
                )
                secrets = None
    if kind is None or tokens is None or secrets is None or (not tokens and not secrets):
        return None
    return Source(key=key, kind=cast(SourceKind, kind), tokens=tokens, signing_secrets=secrets)


def _load_dc09_source(report: _Report, key: str, table: _Table, environ: Mapping[str, str]) -> Source | None:
    """A source of SIA DC-09 frames (the receiver): its accounts' AES keys and its timestamp band.

    DC-09 frames carry no credential: the receiver knows the source by the frame's account, and an
    account with a key proves itself by encrypting (a plain frame from it is refused).
    """
    errors_before = len(report.lines)
    for name in ("token_env", "signing_secrets_env"):
        if name in table.raw:
            report.add(
                table.at(name),
                "is not for a dc09 source: DC-09 frames carry no token; give an account an AES key "
                "(encryption_keys_env) to have its frames proven",
            )
    key_format = table.text("encryption_keys_format", example='"hex" or "ascii"')
    if key_format is not None and key_format not in _DC09_KEY_FORMATS:
        report.add(table.at("encryption_keys_format"), f'{_show(key_format)} is not "hex" or "ascii"')
    if key_format is not None and "encryption_keys_env" not in table.raw:
        report.add(table.at("encryption_keys_format"), "is given without encryption_keys_env")
    keys_env = table.text("encryption_keys_env", example='a variable name like "ACME_DC09_KEYS"')
    keys: dict[str, bytes] | None = {}
    if keys_env is not None and key_format in (None, *_DC09_KEY_FORMATS):
        keys = _dc09_keys(report, table.at("encryption_keys_env"), keys_env, key_format or "hex", environ)
    past, future = _timestamp_band(report, table)
    if len(report.lines) > errors_before or keys is None or past is None or future is None:
        return None
    return Source(
        key=key,
        kind="dc09",
        encryption_keys=MappingProxyType(keys),
        timestamp_past=past,
        timestamp_future=future,
    )


# "hex": 32, 48 or 64 hex digits are the key's bytes (the standard's notation); "ascii": the 16, 24
# or 32 characters themselves are the key (what pysiaalarm and panels such as Ajax take).
_DC09_KEY_FORMATS = ("hex", "ascii")
_DC09_KEY_SHAPES = {"hex": "32, 48 or 64 hex digits", "ascii": "16, 24 or 32 printable characters"}


def _dc09_keys(
    report: _Report, where: str, name: str, key_format: str, environ: Mapping[str, str]
) -> dict[str, bytes] | None:
    """``<account>=<key>,...`` from environment variable ``name``, by normalised account."""
    entries = _env_values(report, where, name, environ)
    if entries is None:
        return None
    keys: dict[str, bytes] = {}
    errors_before = len(report.lines)
    for number, entry in enumerate(entries, start=1):
        account, sep, text = (part.strip() for part in entry.partition("="))
        key = _dc09_key(text, key_format)
        # Never a key, nor a part of one: error messages end up in logs.
        if not sep or not account or not text:
            report.add(where, f"entry {number} in {name} is not <account>=<key>")
        elif not _DC09_ACCOUNT_PATTERN.fullmatch(account):
            report.add(
                where,
                f"entry {number} in {name}: {_show(account)} is not a DC-09 account (3 to 16 hex digits)",
            )
        elif key is None:
            report.add(
                where,
                f"the key of account {account} in {name} must be {_DC09_KEY_SHAPES[key_format]} for "
                f"AES-128, -192 or -256 (encryption_keys_format {_show(key_format)}), not {len(text)} "
                "characters",
            )
        elif _normalise(account) in keys:
            report.add(where, f"account {account} has two keys in {name}")
        else:
            keys[_normalise(account)] = key
    return None if len(report.lines) > errors_before else keys


def _dc09_key(text: str, key_format: str) -> bytes | None:
    """The AES key ``text`` stands for, or None when it is not one in ``key_format``."""
    if key_format == "hex":
        if len(text) // 2 not in DC09_KEY_BYTES or len(text) % 2 or not _HEX_PATTERN.fullmatch(text):
            return None
        return bytes.fromhex(text)
    if len(text) not in DC09_KEY_BYTES or not _TOKEN_PATTERN.fullmatch(text):
        return None
    return text.encode("ascii")


def _timestamp_band(report: _Report, table: _Table) -> tuple[timedelta | None, timedelta | None]:
    """How far behind (past) and ahead (future) of the receiver's clock a frame's timestamp may be."""
    if "timestamp_band" not in table.raw:
        return DEFAULT_TIMESTAMP_PAST, DEFAULT_TIMESTAMP_FUTURE
    raw = table.table("timestamp_band", example='a table like { past = "40s", future = "20s" }')
    if raw is None:
        return None, None
    band = _Table(report, table.at("timestamp_band"), raw, ("past", "future"))
    past = band.duration("past", default=DEFAULT_TIMESTAMP_PAST, maximum=MAX_TIMESTAMP_BAND)
    future = band.duration("future", default=DEFAULT_TIMESTAMP_FUTURE, maximum=MAX_TIMESTAMP_BAND)
    return past, future


def _check_dc09(report: _Report, sources: Mapping[str, Source], sites: Sequence[_SiteRoutes]) -> None:
    """What one receiver port for every dc09 source needs: each account claimed through one dc09
    source only, in a form a frame can carry, and no AES key for an account no site lists (a typo
    there would leave the real account's frames unencrypted and accepted)."""
    claimed: dict[str, tuple[str, str]] = {}  # normalised account -> (site, dc09 source)
    for site in sites:
        dc09 = [s for s in site.sources if s in sources and sources[s].kind == "dc09"]
        panel = any(s in sources and sources[s].kind == "panel" for s in site.sources)
        for account in site.accounts:
            if dc09 and not panel and not _DC09_ACCOUNT_PATTERN.fullmatch(account):
                report.add(
                    f"sites.{site.key}.accounts",
                    f"{_show(account)} cannot come in a DC-09 frame (an account is 3 to 16 hex digits)",
                )
            for source_key in dc09:
                first = claimed.setdefault(_normalise(account), (site.key, source_key))
                if first[1] != source_key:
                    report.add(
                        f"sites.{site.key}.accounts",
                        f'"{account}" is already claimed by site "{first[0]}" on dc09 source "{first[1]}"; '
                        "the receiver takes every dc09 source's frames on one port, so an account "
                        "belongs to one of them",
                    )
    for source in sources.values():
        for account in source.encryption_keys:
            if claimed.get(account, ("", ""))[1] != source.key:
                report.add(
                    f"sources.{source.key}.encryption_keys_env",
                    f'holds a key for account {account}, which no site lists through source "{source.key}"',
                )


def _is_signing_secret(secret: str) -> bool:
    if not secret.startswith(SIGNING_SECRET_PREFIX):
        return False
    try:
        key = base64.b64decode(secret.removeprefix(SIGNING_SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(key) in SIGNING_SECRET_BYTES


def _check_shared_credentials(
    report: _Report, sources: Mapping[str, Source], raw: Mapping[str, object]
) -> None:
    """A token or secret that two sources share would let one pass as the other."""
    for attribute, env_key, what in (
        ("tokens", "token_env", "token"),
        ("signing_secrets", "signing_secrets_env", "secret"),
    ):
        owner: dict[str, str] = {}
        for source in sources.values():
            for value in getattr(source, attribute):
                first = owner.setdefault(value, source.key)
                if first != source.key:
                    env_name = cast(Mapping[str, object], raw[source.key])[env_key]
                    report.add(
                        f"sources.{source.key}.{env_key}",
                        f'a {what} in {env_name} is also a {what} of source "{first}"; '
                        f"each {what} must identify one source",
                    )


_STEP_KEYS = ("do", "after", "cancellable")


def _load_plan(report: _Report, key: str, raw: Mapping[str, object]) -> Plan | None:
    where = f"plans.{key}"
    errors_before = len(report.lines)
    steps_by_key: dict[str, tuple[Step, ...]] = {}
    for plan_key, raw_steps in raw.items():
        if plan_key not in PLAN_KEYS:
            report.add(
                f"{where}.{plan_key}",
                _unknown_key(plan_key, sorted(PLAN_KEYS)) + ' (a family, "trouble" or "default")',
            )
            continue
        if not isinstance(raw_steps, list):
            report.add(f"{where}.{plan_key}", f"must be an array of steps, not {_toml_type(raw_steps)}")
            continue
        steps: list[Step] = []
        for index, raw_step in enumerate(raw_steps):
            step = _load_step(report, f"{where}.{plan_key}[{index}]", raw_step)
            if step is not None:
                steps.append(step)
        steps_by_key[plan_key] = tuple(steps)
    for problem in plan_problems(steps_by_key):
        report.add(f"{where}.{problem.where}", problem.message)
    if len(report.lines) > errors_before:
        return None
    return Plan(key=key, steps_by_key=steps_by_key)


def _load_step(report: _Report, where: str, raw: object) -> Step | None:
    """A bare string is a step with no delay that a cancel does not stop."""
    if isinstance(raw, str):
        return Step(kind=raw.strip())
    if not isinstance(raw, dict):
        report.add(
            where,
            'must be a step kind or a table like { do = "callonalarm.trigger", after = "60s" }, '
            f"not {_toml_type(raw)}",
        )
        return None
    table = _Table(report, where, raw, _STEP_KEYS)
    kind = table.text("do", required=True, example='a step kind like "callonalarm.trigger"')
    # The range is checked by plan_problems, which also guards plans built in code.
    after = table.duration("after", default=timedelta(0), maximum=timedelta.max)
    cancellable = table.boolean("cancellable", default=False)
    if kind is None or after is None:
        return None
    return Step(kind=kind, after=after, cancellable=cancellable)


_SITE_KEYS = (
    "name",
    "sources",
    "accounts",
    "alta_zones",
    "timezone",
    "site_type",
    "instructions",
    "cancel_window",
    "plan",
    "location",
    "tracktik",
    "callonalarm",
    "rapidsos",
    *_SUPERVISION_KEYS,
)
_LOCATION_KEYS = (
    "name",
    "address_line1",
    "address_line2",
    "city",
    "state",
    "country",
    "postal_code",
    "latitude",
    "longitude",
)
_TRACKTIK_KEYS = ("alarm_organization", "alarm_connection_custom_id", "alarm_type_codes")
_CALLONALARM_KEYS = ("account_number",)
_RAPIDSOS_KEYS = ("callflow", "emergency_contacts", "alarm_permit_number", "site_phone")
_CONTACT_KEYS = ("name", "phone", "relationship", "language")


def _load_site(
    report: _Report,
    key: str,
    raw: Mapping[str, object],
    sources: Mapping[str, Source | None],
    plans: Mapping[str, Plan | None],
    routes: list[_SiteRoutes],
) -> Site | None:
    """The site called ``key``, or None after reporting its problems; its routing goes to ``routes``."""
    where = f"sites.{key}"
    errors_before = len(report.lines)
    table = _Table(report, where, raw, _SITE_KEYS)
    name = table.text("name", required=True, example='a string like "Montréal HQ"')
    site_sources = table.identifiers("sources", required=True, example='source names like ["acme-panels"]')
    for source_key in site_sources:
        if source_key not in sources:
            report.add(
                table.at("sources"), f'"{source_key}" is not a source (no [sources.{source_key}] table)'
            )
    accounts = table.identifiers("accounts", example='panel account numbers like ["ab-95367"]')
    alta_zones = table.identifiers("alta_zones", example='Alta alarm zone ids like ["az-5d1c"]')
    routes.append(_SiteRoutes(key, site_sources, accounts, alta_zones))
    timezone = _timezone(report, table)
    site_type = table.text("site_type", required=True, example='"COMMERCIAL" or "RESIDENTIAL"')
    if site_type is not None and site_type not in SITE_TYPES:
        report.add(
            table.at("site_type"),
            f"{_show(site_type)} is not one of RapidSOS's {', '.join(sorted(SITE_TYPES))}",
        )
        site_type = None
    instructions = table.text("instructions", min_length=0, max_length=4000) or ""
    cancel_window = table.duration("cancel_window", default=DEFAULT_CANCEL_WINDOW, maximum=MAX_CANCEL_WINDOW)
    plan_key = table.text("plan", required=True, example='a plan name like "commercial"')
    if plan_key is not None and plan_key not in plans:
        report.add(table.at("plan"), f'"{plan_key}" is not a plan (no [plans.{plan_key}] table)')
    plan = plans.get(plan_key) if plan_key is not None else None

    location = _load_location(report, table)
    tracktik = _load_tracktik(report, table)
    callonalarm = _load_callonalarm(report, table)
    rapidsos = _load_rapidsos(report, table)
    supervision = _load_supervision(report, table)
    if supervision is not None and not accounts:
        report.add(
            table.at(next(k for k in _SUPERVISION_KEYS if k in raw)),
            "supervises the site's panel accounts, but the site lists none",
        )

    resolved = [source for s in site_sources if (source := sources.get(s)) is not None]
    _check_reachable(report, table, resolved, len(resolved) == len(site_sources))
    if plan is not None:
        _check_vendor_tables(report, table, plan)
        if tracktik is not None:
            _check_type_codes(report, table, plan, tracktik)
    if location is not None and "rapidsos" in raw:
        _check_rapidsos_location(report, table, location, site_type)

    if (
        len(report.lines) > errors_before
        or name is None
        or timezone is None
        or site_type is None
        or cancel_window is None
        or plan is None  # its own errors are reported under [plans]
        or location is None
    ):
        return None
    return Site(
        key=key,
        name=name,
        sources=site_sources,
        accounts=accounts,
        alta_zones=alta_zones,
        timezone=timezone,
        site_type=site_type,
        instructions=instructions,
        cancel_window=cancel_window,
        plan=plan,
        location=location,
        tracktik=tracktik,
        callonalarm=callonalarm,
        rapidsos=rapidsos,
        supervision=supervision,
    )


def _timezone(report: _Report, table: _Table) -> ZoneInfo | None:
    name = table.text("timezone", required=True, example='an IANA name like "America/Montreal"')
    if name is None:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        report.add(table.at("timezone"), f'{_show(name)} is not an IANA time zone like "America/Montreal"')
        return None


def _load_location(report: _Report, site: _Table) -> Location | None:
    """The site's location; a value that is wrong is reported and left out (the site then fails).

    A partly wrong location is still returned, so that the RapidSOS checks can report on the rest.
    """
    raw = site.table(
        "location", required=True, example="a table with address_line1 or latitude and longitude"
    )
    if raw is None:
        return None
    table = _Table(report, site.at("location"), raw, _LOCATION_KEYS)
    texts = {
        key: table.text(key) for key in _LOCATION_KEYS if key not in ("latitude", "longitude", "postal_code")
    }
    postal_code = table.text("postal_code", example='a string like "H2W 2R2" (quote it)')
    latitude = table.number("latitude", low=-90, high=90)
    longitude = table.number("longitude", low=-180, high=180)
    country = texts["country"]
    if country is not None and not _COUNTRY_PATTERN.fullmatch(country):
        report.add(
            table.at("country"), f'{_show(country)} is not a two-letter ISO 3166 code like "CA" or "US"'
        )
        country = None
    if ("latitude" in raw) != ("longitude" in raw):
        missing = "longitude" if "latitude" in raw else "latitude"
        report.add(
            table.at(missing), "is required with " + ("latitude" if missing == "longitude" else "longitude")
        )
    if "address_line1" not in raw and "latitude" not in raw and "longitude" not in raw:
        report.add(table.at("address_line1"), "is required unless latitude and longitude are set")
    return Location(
        name=texts["name"],
        address_line1=texts["address_line1"],
        address_line2=texts["address_line2"],
        city=texts["city"],
        state=texts["state"],
        country=country,
        postal_code=postal_code,
        latitude=latitude,
        longitude=longitude,
    )


def _load_tracktik(report: _Report, site: _Table) -> TrackTikSite | None:
    raw = site.table("tracktik")
    if raw is None:
        return None
    errors_before = len(report.lines)
    table = _Table(report, site.at("tracktik"), raw, _TRACKTIK_KEYS)
    organization = table.integer("alarm_organization", required=True, example="a TrackTik client id like 687")
    if organization is not None and organization < 1:
        report.add(table.at("alarm_organization"), f"{organization} is not a TrackTik client id (1 or more)")
    connection = table.text("alarm_connection_custom_id", example='a string like "ab-95367"')
    raw_codes = table.table("alarm_type_codes", required=True, example='a table like { burglary = "11111" }')
    codes: dict[str, str] = {}
    for plan_key, code in (raw_codes or {}).items():
        where = f"{table.at('alarm_type_codes')}.{plan_key}"
        if plan_key not in PLAN_KEYS:
            report.add(
                where, _unknown_key(plan_key, sorted(PLAN_KEYS)) + ' (a family, "trouble" or "default")'
            )
        elif not isinstance(code, str) or not code.strip():
            report.add(
                where, f'must be a TrackTik alarm type code like "11111" (quote it), not {_show(code)}'
            )
        else:
            codes[plan_key] = code.strip()
    if raw_codes is not None and not raw_codes:
        report.add(table.at("alarm_type_codes"), 'must name at least one code, e.g. default = "11111"')
    if len(report.lines) > errors_before or organization is None:
        return None
    return TrackTikSite(
        alarm_organization=organization,
        alarm_type_codes=MappingProxyType(codes),
        alarm_connection_custom_id=connection,
    )


def _load_callonalarm(report: _Report, site: _Table) -> CallOnAlarmSite | None:
    raw = site.table("callonalarm")
    if raw is None:
        return None
    table = _Table(report, site.at("callonalarm"), raw, _CALLONALARM_KEYS)
    account = table.text("account_number", required=True, example='a string like "CA-1001"', max_length=64)
    return None if account is None else CallOnAlarmSite(account_number=account)


def _load_rapidsos(report: _Report, site: _Table) -> RapidSOSSite | None:
    raw = site.table("rapidsos")
    if raw is None:
        return None
    errors_before = len(report.lines)
    table = _Table(report, site.at("rapidsos"), raw, _RAPIDSOS_KEYS)
    callflow = table.text(
        "callflow", required=True, example='the agreed flow name like "CentralStationABCFireAlarmFlow"'
    )
    permit = table.text("alarm_permit_number")
    site_phone = _phone(report, table, "site_phone", required=False)
    raw_contacts = table.array(
        "emergency_contacts", example='an array like [{ name = "Jane Roe", phone = "+15145550100" }]'
    )
    contacts: list[EmergencyContact] = []
    if raw_contacts is not None and len(raw_contacts) > MAX_EMERGENCY_CONTACTS:
        report.add(
            table.at("emergency_contacts"),
            f"has {len(raw_contacts)} contacts; RapidSOS takes at most {MAX_EMERGENCY_CONTACTS} "
            "(the keyholder and three more)",
        )
    for index, raw_contact in enumerate(raw_contacts or ()):
        where = f"{table.at('emergency_contacts')}[{index}]"
        if not isinstance(raw_contact, dict):
            report.add(
                where, f"must be a table like {{ name = ..., phone = ... }}, not {_toml_type(raw_contact)}"
            )
            continue
        contact = _Table(report, where, raw_contact, _CONTACT_KEYS)
        name = contact.text("name", required=True, example='a full name like "Jane Roe"')
        phone = _phone(report, contact, "phone", required=True)
        relationship = contact.text("relationship")
        language = contact.text("language")
        if name is not None and phone is not None:
            contacts.append(
                EmergencyContact(name=name, phone=phone, relationship=relationship, language=language)
            )
    if len(report.lines) > errors_before or callflow is None:
        return None
    return RapidSOSSite(
        callflow=callflow,
        emergency_contacts=tuple(contacts),
        alarm_permit_number=permit,
        site_phone=site_phone,
    )


def _phone(report: _Report, table: _Table, key: str, *, required: bool) -> str | None:
    phone = table.text(key, required=required, example='an E.164 number like "+15145550100" (quote it)')
    if phone is not None and not _E164_PATTERN.fullmatch(phone):
        report.add(table.at(key), f'{_show(phone)} is not an E.164 number like "+15145550100"')
        return None
    return phone


def _supervision_period(
    table: _Table, key: str, *, minimum: timedelta, maximum: timedelta
) -> timedelta | None:
    """A supervision period from the file: None when absent or wrong (a wrong one is reported)."""
    if key not in table.raw:
        return None
    period = table.duration(key, default=timedelta(0), maximum=maximum)
    if period is not None and period < minimum:
        table.report.add(
            table.at(key),
            f'{_show(table.raw[key])} is shorter than the minimum of "{format_duration(minimum)}" '
            "(leave the key out to switch the check off)",
        )
        return None
    return period


def _load_supervision(report: _Report, table: _Table) -> Supervision | None:
    """How often a site's (or a source's) accounts must be heard from; None when it does not say."""
    link = _supervision_period(
        table, "link_supervision", minimum=MIN_LINK_SUPERVISION, maximum=MAX_LINK_SUPERVISION
    )
    interval = _supervision_period(
        table, "test_interval", minimum=MIN_TEST_INTERVAL, maximum=MAX_TEST_INTERVAL
    )
    grace: timedelta | None = DEFAULT_TEST_GRACE
    if "test_grace" in table.raw:
        if "test_interval" not in table.raw:
            report.add(
                table.at("test_grace"),
                "is given without test_interval (the grace is added to the test interval)",
            )
        grace = table.duration("test_grace", default=DEFAULT_TEST_GRACE, maximum=MAX_TEST_GRACE)
    if (link is None and interval is None) or grace is None:
        return None
    return Supervision(link=link, test_interval=interval, test_grace=grace)


def _supervise_source(
    report: _Report, key: str, raw: Mapping[str, object], source: Source | None
) -> Source | None:
    """The source with the supervision it declares for every account routed through it."""
    if not any(k in raw for k in _SUPERVISION_KEYS):
        return source
    # Every key of the table is allowed here: _load_source has reported the unknown ones.
    table = _Table(report, f"sources.{key}", raw, raw.keys())
    errors_before = len(report.lines)
    supervision = _load_supervision(report, table)
    if raw.get("kind") == "alta":
        report.add(
            table.at(next(k for k in _SUPERVISION_KEYS if k in raw)),
            "supervises panel accounts; an alta source posts only when a zone alarms",
        )
    if source is None or len(report.lines) > errors_before:
        return None
    return replace(source, supervision=supervision)


def _check_reachable(report: _Report, table: _Table, sources: Sequence[Source], all_resolved: bool) -> None:
    """Every identifier needs a source that can post it, and every source something to post.

    Identifiers count as given when the file lists any, even malformed ones (already reported).
    ``all_resolved`` is false when a listed source is unknown or broken (already reported): its kind
    is then unknown, so the site is not also blamed for lacking one.
    """
    kinds = {source.kind for source in sources}
    has_accounts = bool(table.raw.get("accounts"))
    has_zones = bool(table.raw.get("alta_zones"))
    if all_resolved and has_accounts and not kinds.intersection(ACCOUNT_SOURCE_KINDS):
        report.add(
            table.at("accounts"),
            "are panel account numbers, but none of the site's sources is a panel or dc09 source",
        )
    if all_resolved and has_zones and "alta" not in kinds:
        report.add(
            table.at("alta_zones"), "are Alta zone ids, but none of the site's sources is an alta source"
        )
    for source in sources:
        if source.kind in ACCOUNT_SOURCE_KINDS and not has_accounts:
            report.add(
                table.at("accounts"),
                f'is empty, so {source.kind} source "{source.key}" cannot post for this site',
            )
        if source.kind == "alta" and not has_zones:
            report.add(
                table.at("alta_zones"), f'is empty, so alta source "{source.key}" cannot post for this site'
            )


def _check_vendor_tables(report: _Report, table: _Table, plan: Plan) -> None:
    """A plan step that needs vendor settings the site lacks would fail on every alarm."""
    needed: dict[str, str] = {}
    for steps in plan.steps_by_key.values():
        for step in steps:
            vendor = STEP_VENDOR_TABLES.get(step.kind.split(".", 1)[0])
            if vendor is not None:
                needed.setdefault(vendor, step.kind)
    for vendor, kind in needed.items():
        if vendor not in table.raw:
            report.add(table.at(vendor), f'is required: plan "{plan.key}" has {kind} steps')


def _check_type_codes(report: _Report, table: _Table, plan: Plan, tracktik: TrackTikSite) -> None:
    """Every plan list that creates a TrackTik alarm needs a type code: its own or ``default``."""
    codes = tracktik.alarm_type_codes
    if DEFAULT_KEY in codes:
        return
    uncovered = [
        plan_key
        for plan_key, steps in plan.steps_by_key.items()
        if plan_key not in codes and any(step.kind.startswith("tracktik.") for step in steps)
    ]
    where = f"{table.at('tracktik')}.alarm_type_codes"
    if DEFAULT_KEY in uncovered:
        # Only a default code can serve families the plan does not name.
        report.add(where, f'needs a "default" code: plan "{plan.key}" creates TrackTik alarms by default')
    elif uncovered:
        report.add(
            where,
            f'has no code for {", ".join(uncovered)} and no "default", but plan "{plan.key}" creates '
            "TrackTik alarms for them",
        )


def _check_rapidsos_location(
    report: _Report, table: _Table, location: Location, site_type: str | None
) -> None:
    """RapidSOS needs coordinates or a complete civic address within its limits (seed 004).

    Presence is judged from the file, so that a value already reported as malformed is not also
    reported as missing.
    """
    where = table.at("location")
    present = cast(Mapping[str, object], table.raw["location"]).keys()
    has_coordinates = "latitude" in present and "longitude" in present
    for key, (rapidsos_name, low, high) in RAPIDSOS_CIVIC.items():
        value = getattr(location, key)
        if value is not None and not low <= len(value) <= high:
            size = f"exactly {low}" if low == high else f"{low} to {high}"
            report.add(
                f"{where}.{key}",
                f"{_show(value)} does not fit RapidSOS ({rapidsos_name} is {size} characters)",
            )
    missing = [key for key in RAPIDSOS_CIVIC_REQUIRED if key not in present]
    if not has_coordinates and missing:
        report.add(
            f"{where}.{missing[0]}",
            "is required for RapidSOS: give latitude and longitude, or a full address "
            f"({', '.join(missing)} missing)",
        )
    if site_type in GEODETIC_SITE_TYPES and not has_coordinates:
        report.add(
            f"{where}.latitude", f"is required for RapidSOS: a {site_type} site is located by coordinates"
        )


def _check_claims(report: _Report, sources: Mapping[str, Source], sites: Sequence[_SiteRoutes]) -> None:
    """An account or zone that two sites claim on the same source could route to either."""
    for attribute, kind in (("accounts", "panel"), ("accounts", "dc09"), ("alta_zones", "alta")):
        _, claims = _route_index(sources, sites, attribute, cast(SourceKind, kind))
        for claim in claims:
            report.add(
                f"sites.{claim.site}.{claim.field}",
                f'"{claim.identifier}" is already claimed by site "{claim.other_site}" '
                f'on source "{claim.source}"',
            )


def _section(report: _Report, document: Mapping[str, object], name: str) -> dict[str, Mapping[str, object]]:
    """A top-level table whose entries are tables with well-formed names (e.g. ``[sites.<name>]``)."""
    raw = document.get(name, {})
    if not isinstance(raw, dict):
        report.add(name, f"must be a table of [{name}.<name>] tables, not {_toml_type(raw)}")
        return {}
    entries: dict[str, Mapping[str, object]] = {}
    for key, value in raw.items():
        if not _check_key(report, name, key):
            continue
        if not isinstance(value, dict):
            report.add(f"{name}.{key}", f"must be a table ([{name}.{key}]), not {_toml_type(value)}")
            continue
        entries[key] = value
    return entries


def load_sites(path: Path | None, environ: Mapping[str, str]) -> Sites:
    """Read and validate the sites file at ``path``; ``environ`` supplies the credentials it names.

    With no file (``SITES_FILE`` unset) the directory is empty: nothing may post, every intake request
    is answered 401. Raises ``SitesFileError`` with one line per problem.
    """
    if path is None:
        return Sites()
    report = _Report(str(path))
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise SitesFileError([f"{path}: cannot be read: {exc.strerror or exc}"]) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SitesFileError([f"{path}: is not valid TOML: {exc}"]) from exc

    for key in document:
        if key not in ("sources", "sites", "plans"):
            report.add(key, _unknown_key(key, ("sources", "sites", "plans")))
    raw_sources = _section(report, document, "sources")
    raw_plans = _section(report, document, "plans")
    raw_sites = _section(report, document, "sites")
    for key in raw_plans:
        if key == "unrouted":
            report.add(
                "plans.unrouted", "the name is reserved for the built-in plan of alarms no site claims"
            )

    # Entries that failed stay in the maps as None, so a reference to them is not reported again.
    sources = {key: _load_source(report, key, raw, environ) for key, raw in raw_sources.items()}
    sources = {key: _supervise_source(report, key, raw_sources[key], s) for key, s in sources.items()}
    loaded_sources = {key: s for key, s in sources.items() if s is not None}
    _check_shared_credentials(report, loaded_sources, raw_sources)
    plans = {key: _load_plan(report, key, raw) for key, raw in raw_plans.items()}
    routes: list[_SiteRoutes] = []
    sites = [_load_site(report, key, raw, sources, plans, routes) for key, raw in raw_sites.items()]
    loaded_sites = [site for site in sites if site is not None]
    _check_claims(report, loaded_sources, routes)
    _check_dc09(report, loaded_sources, routes)

    if report.lines:
        raise SitesFileError(report.lines)
    return Sites(sources=loaded_sources.values(), sites=loaded_sites)


def read_sites(sites_file: str | None, environ: Mapping[str, str]) -> Sites:
    """The sites file of a process entry point (the web, the receiver): a bad file stops start-up with
    one line per problem, instead of a traceback."""
    try:
        return load_sites(Path(sites_file) if sites_file else None, environ)
    except SitesFileError as exc:
        raise SystemExit(f"alarm-bridge: invalid sites file:\n{exc}") from None
