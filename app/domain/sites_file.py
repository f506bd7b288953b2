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
import json
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import ValidationError, fields, validates_schema

from app.domain import sia
from app.domain.plans import (
    ALARM_KINDS,
    DEFAULT_KEY,
    PLAN_KEYS,
    TROUBLE_KEY,
    UNKNOWN_KEY,
    Plan,
    Step,
    plan_problems,
)
from app.domain.site_tables import (
    ArrayOf,
    Boolean,
    Duration,
    Identifiers,
    Location,
    Number,
    Report,
    TableOf,
    TableSchema,
    Text,
    Value,
    load_table,
    normalise,
    one_of,
    show,
    toml_type,
    unknown_key,
    unknown_plan_key,
)
from app.domain.site_tables import parse_duration as parse_duration
from app.domain.sites import (
    ACCOUNT_SOURCE_KINDS,
    DC09_KEY_BYTES,
    DEFAULT_CANCEL_WINDOW,
    DEFAULT_TEST_GRACE,
    DEFAULT_TIMESTAMP_FUTURE,
    DEFAULT_TIMESTAMP_PAST,
    MAX_CANCEL_WINDOW,
    MAX_LINK_SUPERVISION,
    MAX_TEST_GRACE,
    MAX_TEST_INTERVAL,
    MAX_TIMESTAMP_BAND,
    MIN_LINK_SUPERVISION,
    MIN_TEST_INTERVAL,
    MIN_TOKEN_LENGTH,
    SIGNING_SECRET_BYTES,
    SIGNING_SECRET_PREFIX,
    SITE_TYPES,
    SOURCE_KINDS,
    Site,
    Sites,
    SitesFileError,
    Source,
    SourceKind,
    Supervision,
    _route_index,
)
from vendors import SITE_TABLES, vendor_of
from vendors.base import SiteContext


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
_ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_TOKEN_PATTERN = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: fits a header and a URL


def _check_key(report: Report, table: str, key: str) -> bool:
    if _KEY_PATTERN.fullmatch(key):
        return True
    report.add(
        f"{table}.{json.dumps(key, ensure_ascii=False)}",
        "names are 1 to 64 lower-case letters, digits, '-' or '_', starting with a letter or digit",
    )
    return False


# --- supervision: of a site's accounts, or of every account a source posts for ----------------------


class _Grace(Duration):
    """``test_grace``: only beside ``test_interval``, to which it is added."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> timedelta:
        errors = (
            []
            if "test_interval" in (data or {})
            else ["is given without test_interval (the grace is added to the test interval)"]
        )
        try:
            grace = super()._deserialize(value, attr, data, **kwargs)
        except ValidationError as exc:
            raise ValidationError(errors + cast(list[str], exc.messages)) from None
        if errors:
            raise ValidationError(errors)
        return grace


def _supervision_fields() -> dict[str, fields.Field[Any]]:
    return {
        "link_supervision": Duration(minimum=MIN_LINK_SUPERVISION, maximum=MAX_LINK_SUPERVISION),
        "test_interval": Duration(minimum=MIN_TEST_INTERVAL, maximum=MAX_TEST_INTERVAL),
        "test_grace": _Grace(maximum=MAX_TEST_GRACE, load_default=DEFAULT_TEST_GRACE),
    }


_SupervisionSchema = cast(type[TableSchema], TableSchema.from_dict(_supervision_fields()))
_SUPERVISION_KEYS = tuple(_supervision_fields())


def _supervision(data: Mapping[str, Any]) -> Supervision | None:
    """The supervision a table's values declare; None when it declares no check."""
    link, interval = data.get("link_supervision"), data.get("test_interval")
    if link is None and interval is None:
        return None
    return Supervision(
        link=link, test_interval=interval, test_grace=data.get("test_grace", DEFAULT_TEST_GRACE)
    )


# --- [sources.<key>] ---------------------------------------------------------------------------------

_DC09_SOURCE_KEYS = ("encryption_keys_env", "encryption_keys_format", "timestamp_band")
_SOURCE_KEYS = ("kind", "token_env", "signing_secrets_env", *_SUPERVISION_KEYS, *_DC09_SOURCE_KEYS)
# "hex": 32, 48 or 64 hex digits are the key's bytes (the standard's notation); "ascii": the 16, 24
# or 32 characters themselves are the key (what pysiaalarm and panels such as Ajax take).
_DC09_KEY_FORMATS = ("hex", "ascii")
_DC09_KEY_SHAPES = {"hex": "32, 48 or 64 hex digits", "ascii": "16, 24 or 32 printable characters"}


def _kind(raw: Mapping[str, object]) -> str | None:
    """The source's kind when the file gives a valid one (its problems are the ``kind`` field's)."""
    kind = raw.get("kind")
    return kind.strip() if isinstance(kind, str) and kind.strip() in SOURCE_KINDS else None


class _Refused(fields.Field[object]):
    """A key of ``[sources.<key>]`` that this kind of source does not take."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> object:
        kind = _kind(data or {})
        if kind is None:  # the kind's own problem is reported
            return value
        raise ValidationError(self.message.format(kind=kind))


class _SourceSchema(TableSchema):
    """What every source table has: its kind. Supervision keys are read by ``_SupervisionSchema``."""

    KEYS = _SOURCE_KEYS

    kind = Text(
        required=True,
        example='"panel", "alta" or "dc09"',
        validate=one_of(SOURCE_KINDS, lambda v: f'{show(v)} is not "panel", "alta" or "dc09"'),
    )


class _PostingSourceSchema(_SourceSchema):
    """A panel or alta source: it posts over HTTP with a bearer token or a Standard Webhooks signature."""

    encryption_keys_env = _Refused("is for a dc09 source (the receiver), not a {kind} source")
    encryption_keys_format = _Refused("is for a dc09 source (the receiver), not a {kind} source")
    timestamp_band = _Refused("is for a dc09 source (the receiver), not a {kind} source")
    token_env = Text(example='a variable name like "ACME_PANELS_TOKEN"')
    signing_secrets_env = Text(example='a variable name like "ACME_PANELS_WHSEC"')

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _authenticates(
        self, data: dict[str, Any], original_data: Mapping[str, object], **kwargs: Any
    ) -> None:
        if "token_env" not in original_data and "signing_secrets_env" not in original_data:
            raise ValidationError(
                "is required unless signing_secrets_env is set (every source authenticates)", "token_env"
            )


_DC09_TAKES_NO = (
    "is not for a dc09 source: DC-09 frames carry no token; give an account an AES key "
    "(encryption_keys_env) to have its frames proven"
)


class _KeyFormat(Text):
    """``encryption_keys_format``: how the keys in ``encryption_keys_env`` are written."""

    def convert(self, value: str, data: Mapping[str, Any]) -> str:
        text = super().convert(value, data)
        errors = [] if text in _DC09_KEY_FORMATS else [f'{show(text)} is not "hex" or "ascii"']
        if "encryption_keys_env" not in data:
            errors.append("is given without encryption_keys_env")
        if errors:
            # The text is kept so that the keys are not read in a format nobody asked for; marshmallow
            # keeps whatever a field hands back, although its annotation says a list or a dict.
            raise ValidationError(errors, valid_data=text)  # type: ignore[arg-type]
        return text


class _Dc09SourceSchema(_SourceSchema):
    """A source of SIA DC-09 frames (the receiver): its accounts' AES keys and its timestamp band.

    DC-09 frames carry no credential: the receiver knows the source by the frame's account, and an
    account with a key proves itself by encrypting (a plain frame from it is refused). The timestamp
    band is read after the keys (``_TIMESTAMP_BAND``), as the problems are reported.
    """

    token_env = _Refused(_DC09_TAKES_NO)
    signing_secrets_env = _Refused(_DC09_TAKES_NO)
    encryption_keys_format = _KeyFormat(example='"hex" or "ascii"')
    encryption_keys_env = Text(example='a variable name like "ACME_DC09_KEYS"')


class _TimestampBandSchema(TableSchema):
    """How far behind (past) and ahead (future) of the receiver's clock a frame's timestamp may be."""

    past = Duration(maximum=MAX_TIMESTAMP_BAND, load_default=DEFAULT_TIMESTAMP_PAST)
    future = Duration(maximum=MAX_TIMESTAMP_BAND, load_default=DEFAULT_TIMESTAMP_FUTURE)


_TIMESTAMP_BAND = TableOf[dict[str, timedelta]](
    _TimestampBandSchema, example='a table like { past = "40s", future = "20s" }'
)


def _env_values(report: Report, where: str, name: str, environ: Mapping[str, str]) -> tuple[str, ...] | None:
    """The comma-separated values of environment variable ``name``; a problem if unset or empty."""
    if not _ENV_NAME_PATTERN.fullmatch(name):
        report.add(where, f"{show(name)} is not an environment variable name")
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
    report: Report, key: str, raw: Mapping[str, object], environ: Mapping[str, str]
) -> Source | None:
    """The source called ``key``: its table, then the credentials it names in ``environ``.

    The environment is looked up after the table is read (marshmallow reads the file, not the
    process's variables), so its problems come after the table's.
    """
    where = f"sources.{key}"
    if _kind(raw) == "dc09":
        return _load_dc09_source(report, key, raw, environ)
    data, _ = report.read(where, _PostingSourceSchema(), raw)
    token_env, secrets_env = data.get("token_env"), data.get("signing_secrets_env")
    tokens: tuple[str, ...] | None = ()
    secrets: tuple[str, ...] | None = ()
    if token_env is not None:
        tokens = _env_values(report, f"{where}.token_env", token_env, environ)
        for number, token in enumerate(tokens or (), start=1):
            # Never the value itself: error messages end up in logs.
            if len(token) < MIN_TOKEN_LENGTH or not _TOKEN_PATTERN.fullmatch(token):
                report.add(
                    f"{where}.token_env",
                    f"token {number} in {token_env} must be at least {MIN_TOKEN_LENGTH} printable ASCII "
                    "characters without spaces",
                )
                tokens = None
    if secrets_env is not None:
        secrets = _env_values(report, f"{where}.signing_secrets_env", secrets_env, environ)
        for number, secret in enumerate(secrets or (), start=1):
            if not _is_signing_secret(secret):
                report.add(
                    f"{where}.signing_secrets_env",
                    f'secret {number} in {secrets_env} is not a Standard Webhooks secret ("whsec_" then the '
                    f"base64 of {SIGNING_SECRET_BYTES.start} to {SIGNING_SECRET_BYTES.stop - 1} bytes)",
                )
                secrets = None
    kind = data.get("kind")
    if kind is None or tokens is None or secrets is None or (not tokens and not secrets):
        return None
    return Source(key=key, kind=cast(SourceKind, kind), tokens=tokens, signing_secrets=secrets)


def _load_dc09_source(
    report: Report, key: str, raw: Mapping[str, object], environ: Mapping[str, str]
) -> Source | None:
    """A dc09 source: its table, its keys from ``environ``, then its timestamp band."""
    where = f"sources.{key}"
    data, problems = report.read(where, _Dc09SourceSchema(), raw)
    ok = not any(k in _SOURCE_KEYS for k in problems)  # unknown keys do not stop the source
    keys: dict[str, bytes] | None = {}
    key_format = data.get("encryption_keys_format")
    if "encryption_keys_env" in data and key_format in (None, *_DC09_KEY_FORMATS):
        keys = _dc09_keys(
            report, f"{where}.encryption_keys_env", data["encryption_keys_env"], key_format or "hex", environ
        )
    band: dict[str, timedelta] | None = {}
    if "timestamp_band" in raw:
        band = report.value(f"{where}.timestamp_band", _TIMESTAMP_BAND, raw["timestamp_band"])
    if not ok or keys is None or band is None or not isinstance(band, dict):
        return None
    return Source(
        key=key,
        kind="dc09",
        encryption_keys=MappingProxyType(keys),
        timestamp_past=band.get("past", DEFAULT_TIMESTAMP_PAST),
        timestamp_future=band.get("future", DEFAULT_TIMESTAMP_FUTURE),
    )


def _dc09_keys(
    report: Report, where: str, name: str, key_format: str, environ: Mapping[str, str]
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
                f"entry {number} in {name}: {show(account)} is not a DC-09 account (3 to 16 hex digits)",
            )
        elif key is None:
            report.add(
                where,
                f"the key of account {account} in {name} must be {_DC09_KEY_SHAPES[key_format]} for "
                f"AES-128, -192 or -256 (encryption_keys_format {show(key_format)}), not {len(text)} "
                "characters",
            )
        elif normalise(account) in keys:
            report.add(where, f"account {account} has two keys in {name}")
        else:
            keys[normalise(account)] = key
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


def _check_dc09(report: Report, sources: Mapping[str, Source], sites: Sequence[_SiteRoutes]) -> None:
    """What one receiver port for every dc09 source needs: each account claimed through one dc09
    source only, in a form a frame can carry, no AES key for an account no site lists (a typo
    there would leave the real account's frames unencrypted and accepted), and no key that two
    accounts share (the account of a frame's header is in clear: anyone could re-address one
    account's captured frame, an alarm or a link test, to the other)."""
    claimed: dict[str, tuple[str, str]] = {}  # normalised account -> (site, dc09 source)
    for site in sites:
        dc09 = [s for s in site.sources if s in sources and sources[s].kind == "dc09"]
        panel = any(s in sources and sources[s].kind == "panel" for s in site.sources)
        for account in site.accounts:
            if dc09 and not panel and not _DC09_ACCOUNT_PATTERN.fullmatch(account):
                report.add(
                    f"sites.{site.key}.accounts",
                    f"{show(account)} cannot come in a DC-09 frame (an account is 3 to 16 hex digits)",
                )
            for source_key in dc09:
                first = claimed.setdefault(normalise(account), (site.key, source_key))
                if first[1] != source_key:
                    report.add(
                        f"sites.{site.key}.accounts",
                        f'"{account}" is already claimed by site "{first[0]}" on dc09 source "{first[1]}"; '
                        "the receiver takes every dc09 source's frames on one port, so an account "
                        "belongs to one of them",
                    )
    key_owner: dict[bytes, tuple[str, str]] = {}  # key -> (account, dc09 source)
    for source in sources.values():
        for account, key in source.encryption_keys.items():
            if claimed.get(account, ("", ""))[1] != source.key:
                report.add(
                    f"sources.{source.key}.encryption_keys_env",
                    f'holds a key for account {account}, which no site lists through source "{source.key}"',
                )
            owner, owner_source = key_owner.setdefault(key, (account, source.key))
            if owner != account:
                report.add(
                    f"sources.{source.key}.encryption_keys_env",
                    f'the key of account {account} is also account {owner}\'s (source "{owner_source}"): '
                    "each account needs a key of its own, or a frame of one could pass as the other's",
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
    report: Report, sources: Mapping[str, Source], raw: Mapping[str, object]
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


def _supervise_source(
    report: Report, key: str, raw: Mapping[str, object], source: Source | None
) -> Source | None:
    """The source with the supervision it declares for every account routed through it."""
    if not any(k in raw for k in _SUPERVISION_KEYS):
        return source
    where = f"sources.{key}"
    # The other keys are the source table's: _load_source has reported the unknown ones.
    data, problems = report.read(where, _SupervisionSchema(), raw, unknown_keys=False)
    if raw.get("kind") == "alta":
        report.add(
            f"{where}.{next(k for k in _SUPERVISION_KEYS if k in raw)}",
            "supervises panel accounts; an alta source posts only when a zone alarms",
        )
    if source is None or problems or raw.get("kind") == "alta":
        return None
    return replace(source, supervision=_supervision(data))


# --- [plans.<key>] -----------------------------------------------------------------------------------


class _StepSchema(TableSchema):
    do = Text(required=True, example='a step kind like "callonalarm.trigger"')
    # The range is checked by plan_problems, which also guards plans built in code.
    after = Duration(maximum=timedelta.max, load_default=timedelta(0))
    cancellable = Boolean(default=False)

    def make(self, data: dict[str, Any]) -> Step:
        return Step(kind=data["do"], after=data["after"], cancellable=data["cancellable"])


def _step(valid: object) -> Step | None:
    """A step from what of its table is right: its kind and delay are enough (a stray key is not)."""
    if not isinstance(valid, dict) or "do" not in valid or "after" not in valid:
        return None
    return Step(kind=valid["do"], after=valid["after"], cancellable=valid.get("cancellable", False))


class _StepValue(Value[Step]):
    """A bare string is a step with no delay that a cancel does not stop."""

    expected = (str, dict)

    def convert(self, value: str | Mapping[str, object], data: Mapping[str, Any]) -> Step:
        if isinstance(value, str):
            return Step(kind=value.strip())
        return cast(Step, load_table(_StepSchema(), value))


_STEPS = ArrayOf(
    _StepValue(example='a step kind or a table like { do = "callonalarm.trigger", after = "60s" }'),
    example="an array of steps",
    salvage=_step,
)


# Families no code of the SIA catalogue opens an alarm of (every power, network, system and test code
# is a trouble, a test or a status): a plan list of theirs would never run.
_NO_ALARM_FAMILIES = frozenset(
    PLAN_KEYS
    - {entry.family.value for entry in sia.CATALOGUE.values() if entry.kind.value in ALARM_KINDS}
    - {TROUBLE_KEY, DEFAULT_KEY, UNKNOWN_KEY}
)


def _load_plan(report: Report, key: str, raw: Mapping[str, object]) -> Plan | None:
    """A plan's lists, in the file's order (a plan key is a family, so the keys are not fields)."""
    where = f"plans.{key}"
    errors_before = len(report.lines)
    steps_by_key: dict[str, tuple[Step, ...]] = {}
    for plan_key, raw_steps in raw.items():
        if plan_key not in PLAN_KEYS:
            report.add(f"{where}.{plan_key}", unknown_plan_key(plan_key))
            continue
        if plan_key in _NO_ALARM_FAMILIES:
            # Accepted and never run would be a rule switched off in silence.
            report.add(
                f"{where}.{plan_key}",
                f"no SIA code opens a {plan_key} alarm (its signals are troubles, tests or status): "
                'a "trouble" list runs for its troubles',
            )
            continue
        steps = report.value(f"{where}.{plan_key}", _STEPS, raw_steps)
        if steps is not None:
            steps_by_key[plan_key] = tuple(steps)
    for problem in plan_problems(steps_by_key):
        report.add(f"{where}.{problem.where}", problem.message)
    if len(report.lines) > errors_before:
        return None
    return Plan(key=key, steps_by_key=steps_by_key)


# --- [sites.<key>] -----------------------------------------------------------------------------------


class _LocationSchema(TableSchema):
    """``[sites.<key>.location]``: an address, coordinates, or both."""

    name = Text()
    address_line1 = Text()
    address_line2 = Text()
    city = Text()
    state = Text()
    country = Text()
    postal_code = Text(example='a string like "H2W 2R2" (quote it)')
    latitude = Number(low=-90, high=90)
    longitude = Number(low=-180, high=180)

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _complete(self, data: dict[str, Any], original_data: Mapping[str, object], **kwargs: Any) -> None:
        errors: dict[str, list[str]] = {}
        country = data.get("country")
        if country is not None and not _COUNTRY_PATTERN.fullmatch(country):
            errors["country"] = [f'{show(country)} is not a two-letter ISO 3166 code like "CA" or "US"']
        if ("latitude" in original_data) != ("longitude" in original_data):
            other = "latitude" if "latitude" in original_data else "longitude"
            missing = "longitude" if other == "latitude" else "latitude"
            errors[missing] = [f"is required with {other}"]
        if not {"address_line1", "latitude", "longitude"} & original_data.keys():
            errors["address_line1"] = ["is required unless latitude and longitude are set"]
        if errors:
            raise ValidationError(errors)

    def make(self, data: dict[str, Any]) -> Location:
        return Location(**data)


class _SourceNames(Identifiers):
    def refer(self, identifiers: Sequence[str]) -> list[str]:
        known = cast(_SiteFields, self.parent).known_sources
        return [f'"{s}" is not a source (no [sources.{s}] table)' for s in identifiers if s not in known]


class _PlanName(Text):
    def convert(self, value: str, data: Mapping[str, Any]) -> str:
        name = super().convert(value, data)
        if name not in cast(_SiteFields, self.parent).known_plans:
            raise ValidationError(f'"{name}" is not a plan (no [plans.{name}] table)')
        return name


class _TimeZone(Value[ZoneInfo]):
    expected = (str,)
    _name = Text()

    def convert(self, value: str, data: Mapping[str, Any]) -> ZoneInfo:
        name = self._name.convert(value, data)
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationError(f'{show(name)} is not an IANA time zone like "America/Montreal"') from None


class _SiteFields(TableSchema):
    """``[sites.<key>]`` up to its location; ``_SiteSchema`` adds the vendor tables and supervision."""

    def __init__(self, known_sources: Collection[str], known_plans: Collection[str]) -> None:
        super().__init__()
        self.known_sources, self.known_plans = known_sources, known_plans

    name = Text(required=True, example='a string like "Montréal HQ"')
    sources = _SourceNames(required=True, example='source names like ["acme-panels"]')
    accounts = Identifiers(example='panel account numbers like ["ab-95367"]')
    alta_zones = Identifiers(example='Alta alarm zone ids like ["az-5d1c"]')
    timezone = _TimeZone(required=True, example='an IANA name like "America/Montreal"')
    site_type = Text(
        required=True,
        example='"COMMERCIAL" or "RESIDENTIAL"',
        validate=one_of(
            SITE_TYPES, lambda v: f"{show(v)} is not one of RapidSOS's {', '.join(sorted(SITE_TYPES))}"
        ),
    )
    instructions = Text(min_length=0, max_length=4000, load_default="")
    cancel_window = Duration(maximum=MAX_CANCEL_WINDOW, load_default=DEFAULT_CANCEL_WINDOW)
    plan = _PlanName(required=True, example='a plan name like "commercial"')
    location = TableOf[Location](
        _LocationSchema, required=True, example="a table with address_line1 or latitude and longitude"
    )


_SiteSchema = cast(
    type[_SiteFields],
    _SiteFields.from_dict(
        {
            **{table.name: TableOf[object](table.schema) for table in SITE_TABLES},
            **_supervision_fields(),
        },
        name="_SiteSchema",
    ),
)


def _load_site(
    report: Report,
    key: str,
    raw: Mapping[str, object],
    sources: Mapping[str, Source | None],
    plans: Mapping[str, Plan | None],
    routes: list[_SiteRoutes],
) -> Site | None:
    """The site called ``key``, or None after reporting its problems; its routing goes to ``routes``.

    The table is read first; what a site needs of its sources, its plan and its vendors' tables is
    checked after, on what of it is right.
    """
    where = f"sites.{key}"
    errors_before = len(report.lines)
    data, problems = report.read(where, _SiteSchema(sources.keys(), plans.keys()), raw)
    # A wrong identifier is left out of its list, and the rest still routes (see _check_claims).
    site_sources = tuple[str, ...](data.get("sources", ()))
    accounts = tuple[str, ...](data.get("accounts", ()))
    routes.append(_SiteRoutes(key, site_sources, accounts, tuple(data.get("alta_zones", ()))))
    # A location table that is partly wrong is still read (marshmallow drops an empty one), so that
    # the vendors' checks can judge the rest; its wrong values are left out.
    location = data.get("location", {} if isinstance(raw.get("location"), dict) else None)
    if isinstance(location, dict):
        wrong = problems.get("location", {})
        location = Location(**{k: v for k, v in location.items() if k not in wrong})
    tables = {t.type: table for t in SITE_TABLES if isinstance(table := data.get(t.name), t.type)}
    supervision = _supervision(data)
    if supervision is not None and not accounts:
        report.add(
            f"{where}.{next(k for k in _SUPERVISION_KEYS if k in raw)}",
            "supervises the site's panel accounts, but the site lists none",
        )

    resolved = [source for s in site_sources if (source := sources.get(s)) is not None]
    _check_reachable(report, where, raw, resolved, len(resolved) == len(site_sources))
    plan = plans.get(data["plan"]) if "plan" in data else None
    if plan is not None:
        _check_vendor_tables(report, where, raw, plan)
    context = SiteContext(
        where=where,
        raw=raw,
        plan_key=plan.key if plan is not None else None,
        plan_steps={k: tuple(step.kind for step in steps) for k, steps in plan.steps_by_key.items()}
        if plan is not None
        else {},
        location=location,
        site_type=data.get("site_type"),
        tables=tables,
    )
    for vendor_table in SITE_TABLES:
        if vendor_table.check is not None:
            vendor_table.check(report, context)
    if len(report.lines) > errors_before or plan is None:  # a plan's own errors are under [plans]
        return None
    return Site(
        key=key,
        name=data["name"],
        sources=site_sources,
        accounts=accounts,
        alta_zones=data["alta_zones"],
        timezone=data["timezone"],
        site_type=data["site_type"],
        instructions=data["instructions"],
        cancel_window=data["cancel_window"],
        plan=plan,
        location=data["location"],
        supervision=supervision,
        tables=tables,
    )


def _check_reachable(
    report: Report, where: str, raw: Mapping[str, object], sources: Sequence[Source], all_resolved: bool
) -> None:
    """Every identifier needs a source that can post it, and every source something to post.

    Identifiers count as given when the file lists any, even malformed ones (already reported).
    ``all_resolved`` is false when a listed source is unknown or broken (already reported): its kind
    is then unknown, so the site is not also blamed for lacking one.
    """
    kinds = {source.kind for source in sources}
    has_accounts = bool(raw.get("accounts"))
    has_zones = bool(raw.get("alta_zones"))
    if all_resolved and has_accounts and not kinds.intersection(ACCOUNT_SOURCE_KINDS):
        report.add(
            f"{where}.accounts",
            "are panel account numbers, but none of the site's sources is a panel or dc09 source",
        )
    if all_resolved and has_zones and "alta" not in kinds:
        report.add(
            f"{where}.alta_zones", "are Alta zone ids, but none of the site's sources is an alta source"
        )
    for source in sources:
        if source.kind in ACCOUNT_SOURCE_KINDS and not has_accounts:
            report.add(
                f"{where}.accounts",
                f'is empty, so {source.kind} source "{source.key}" cannot post for this site',
            )
        if source.kind == "alta" and not has_zones:
            report.add(
                f"{where}.alta_zones", f'is empty, so alta source "{source.key}" cannot post for this site'
            )


def _check_vendor_tables(report: Report, where: str, raw: Mapping[str, object], plan: Plan) -> None:
    """A plan step that needs vendor settings the site lacks would fail on every alarm."""
    needed: dict[str, str] = {}
    for steps in plan.steps_by_key.values():
        for step in steps:
            vendor = vendor_of(step.kind)
            if vendor is not None and vendor.site_table is not None:
                needed.setdefault(vendor.site_table.name, step.kind)
    for name, kind in needed.items():
        if name not in raw:
            report.add(f"{where}.{name}", f'is required: plan "{plan.key}" has {kind} steps')


def _check_claims(report: Report, sources: Mapping[str, Source], sites: Sequence[_SiteRoutes]) -> None:
    """An account or zone that two sites claim on the same source could route to either."""
    for attribute, kind in (("accounts", "panel"), ("accounts", "dc09"), ("alta_zones", "alta")):
        _, claims = _route_index(sources, sites, attribute, cast(SourceKind, kind))
        for claim in claims:
            report.add(
                f"sites.{claim.site}.{claim.field}",
                f'"{claim.identifier}" is already claimed by site "{claim.other_site}" '
                f'on source "{claim.source}"',
            )
    for site in sites:
        # A site's alarms are found by their account, and an Alta alarm's account is its zone: a zone
        # spelled like a panel account of the site would let that panel's disarm cancel the video alarm.
        accounts = {normalise(account) for account in site.accounts}
        for zone in site.alta_zones:
            if normalise(zone) in accounts:
                report.add(
                    f"sites.{site.key}.alta_zones",
                    f'"{zone}" is also one of this site\'s panel accounts: their alarms would group, '
                    "restore and cancel together",
                )


def _section(report: Report, document: Mapping[str, object], name: str) -> dict[str, Mapping[str, object]]:
    """A top-level table whose entries are tables with well-formed names (e.g. ``[sites.<name>]``)."""
    raw = document.get(name, {})
    if not isinstance(raw, dict):
        report.add(name, f"must be a table of [{name}.<name>] tables, not {toml_type(raw)}")
        return {}
    entries: dict[str, Mapping[str, object]] = {}
    for key, value in raw.items():
        if not _check_key(report, name, key):
            continue
        if not isinstance(value, dict):
            report.add(f"{name}.{key}", f"must be a table ([{name}.{key}]), not {toml_type(value)}")
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
    report = Report(str(path))
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise SitesFileError([f"{path}: cannot be read: {exc.strerror or exc}"]) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SitesFileError([f"{path}: is not valid TOML: {exc}"]) from exc

    for key in document:
        if key not in ("sources", "sites", "plans"):
            report.add(key, unknown_key(key, ("sources", "sites", "plans")))
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
