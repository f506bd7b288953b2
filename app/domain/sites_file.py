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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.domain.plans import (
    PLAN_KEYS,
    Plan,
    Step,
    format_duration,
    plan_problems,
)
from app.domain.site_tables import (
    Location,
    Report,
    Table,
    normalise,
    show,
    toml_type,
    unknown_key,
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


_SUPERVISION_KEYS = ("link_supervision", "test_interval", "test_grace")
_DC09_SOURCE_KEYS = ("encryption_keys_env", "encryption_keys_format", "timestamp_band")
_SOURCE_KEYS = ("kind", "token_env", "signing_secrets_env", *_SUPERVISION_KEYS, *_DC09_SOURCE_KEYS)


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
    where = f"sources.{key}"
    table = Table(report, where, raw, _SOURCE_KEYS)
    kind = table.text("kind", required=True, example='"panel", "alta" or "dc09"')
    if kind is not None and kind not in SOURCE_KINDS:
        report.add(table.at("kind"), f'{show(kind)} is not "panel", "alta" or "dc09"')
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


def _load_dc09_source(report: Report, key: str, table: Table, environ: Mapping[str, str]) -> Source | None:
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
        report.add(table.at("encryption_keys_format"), f'{show(key_format)} is not "hex" or "ascii"')
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


def _timestamp_band(report: Report, table: Table) -> tuple[timedelta | None, timedelta | None]:
    """How far behind (past) and ahead (future) of the receiver's clock a frame's timestamp may be."""
    if "timestamp_band" not in table.raw:
        return DEFAULT_TIMESTAMP_PAST, DEFAULT_TIMESTAMP_FUTURE
    raw = table.table("timestamp_band", example='a table like { past = "40s", future = "20s" }')
    if raw is None:
        return None, None
    band = Table(report, table.at("timestamp_band"), raw, ("past", "future"))
    past = band.duration("past", default=DEFAULT_TIMESTAMP_PAST, maximum=MAX_TIMESTAMP_BAND)
    future = band.duration("future", default=DEFAULT_TIMESTAMP_FUTURE, maximum=MAX_TIMESTAMP_BAND)
    return past, future


def _check_dc09(report: Report, sources: Mapping[str, Source], sites: Sequence[_SiteRoutes]) -> None:
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


_STEP_KEYS = ("do", "after", "cancellable")


def _load_plan(report: Report, key: str, raw: Mapping[str, object]) -> Plan | None:
    where = f"plans.{key}"
    errors_before = len(report.lines)
    steps_by_key: dict[str, tuple[Step, ...]] = {}
    for plan_key, raw_steps in raw.items():
        if plan_key not in PLAN_KEYS:
            report.add(
                f"{where}.{plan_key}",
                unknown_key(plan_key, sorted(PLAN_KEYS)) + ' (a family, "trouble" or "default")',
            )
            continue
        if not isinstance(raw_steps, list):
            report.add(f"{where}.{plan_key}", f"must be an array of steps, not {toml_type(raw_steps)}")
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


def _load_step(report: Report, where: str, raw: object) -> Step | None:
    """A bare string is a step with no delay that a cancel does not stop."""
    if isinstance(raw, str):
        return Step(kind=raw.strip())
    if not isinstance(raw, dict):
        report.add(
            where,
            'must be a step kind or a table like { do = "callonalarm.trigger", after = "60s" }, '
            f"not {toml_type(raw)}",
        )
        return None
    table = Table(report, where, raw, _STEP_KEYS)
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
    *(vendor_table.name for vendor_table in SITE_TABLES),
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


def _load_site(
    report: Report,
    key: str,
    raw: Mapping[str, object],
    sources: Mapping[str, Source | None],
    plans: Mapping[str, Plan | None],
    routes: list[_SiteRoutes],
) -> Site | None:
    """The site called ``key``, or None after reporting its problems; its routing goes to ``routes``."""
    where = f"sites.{key}"
    errors_before = len(report.lines)
    table = Table(report, where, raw, _SITE_KEYS)
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
            f"{show(site_type)} is not one of RapidSOS's {', '.join(sorted(SITE_TYPES))}",
        )
        site_type = None
    instructions = table.text("instructions", min_length=0, max_length=4000) or ""
    cancel_window = table.duration("cancel_window", default=DEFAULT_CANCEL_WINDOW, maximum=MAX_CANCEL_WINDOW)
    plan_key = table.text("plan", required=True, example='a plan name like "commercial"')
    if plan_key is not None and plan_key not in plans:
        report.add(table.at("plan"), f'"{plan_key}" is not a plan (no [plans.{plan_key}] table)')
    plan = plans.get(plan_key) if plan_key is not None else None

    location = _load_location(report, table)
    tables = {
        vendor_table.type: loaded
        for vendor_table in SITE_TABLES
        if (loaded := vendor_table.load(report, table)) is not None
    }
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
    context = SiteContext(
        site=table,
        plan_key=plan.key if plan is not None else None,
        plan_steps={k: tuple(step.kind for step in steps) for k, steps in plan.steps_by_key.items()}
        if plan is not None
        else {},
        location=location,
        site_type=site_type,
        tables=tables,
    )
    for vendor_table in SITE_TABLES:
        if vendor_table.check is not None:
            vendor_table.check(report, context)

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
        supervision=supervision,
        tables=tables,
    )


def _timezone(report: Report, table: Table) -> ZoneInfo | None:
    name = table.text("timezone", required=True, example='an IANA name like "America/Montreal"')
    if name is None:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        report.add(table.at("timezone"), f'{show(name)} is not an IANA time zone like "America/Montreal"')
        return None


def _load_location(report: Report, site: Table) -> Location | None:
    """The site's location; a value that is wrong is reported and left out (the site then fails).

    A partly wrong location is still returned, so that the RapidSOS checks can report on the rest.
    """
    raw = site.table(
        "location", required=True, example="a table with address_line1 or latitude and longitude"
    )
    if raw is None:
        return None
    table = Table(report, site.at("location"), raw, _LOCATION_KEYS)
    texts = {
        key: table.text(key) for key in _LOCATION_KEYS if key not in ("latitude", "longitude", "postal_code")
    }
    postal_code = table.text("postal_code", example='a string like "H2W 2R2" (quote it)')
    latitude = table.number("latitude", low=-90, high=90)
    longitude = table.number("longitude", low=-180, high=180)
    country = texts["country"]
    if country is not None and not _COUNTRY_PATTERN.fullmatch(country):
        report.add(
            table.at("country"), f'{show(country)} is not a two-letter ISO 3166 code like "CA" or "US"'
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


def _supervision_period(
    table: Table, key: str, *, minimum: timedelta, maximum: timedelta
) -> timedelta | None:
    """A supervision period from the file: None when absent or wrong (a wrong one is reported)."""
    if key not in table.raw:
        return None
    period = table.duration(key, default=timedelta(0), maximum=maximum)
    if period is not None and period < minimum:
        table.report.add(
            table.at(key),
            f'{show(table.raw[key])} is shorter than the minimum of "{format_duration(minimum)}" '
            "(leave the key out to switch the check off)",
        )
        return None
    return period


def _load_supervision(report: Report, table: Table) -> Supervision | None:
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
    report: Report, key: str, raw: Mapping[str, object], source: Source | None
) -> Source | None:
    """The source with the supervision it declares for every account routed through it."""
    if not any(k in raw for k in _SUPERVISION_KEYS):
        return source
    # Every key of the table is allowed here: _load_source has reported the unknown ones.
    table = Table(report, f"sources.{key}", raw, raw.keys())
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


def _check_reachable(report: Report, table: Table, sources: Sequence[Source], all_resolved: bool) -> None:
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


def _check_vendor_tables(report: Report, table: Table, plan: Plan) -> None:
    """A plan step that needs vendor settings the site lacks would fail on every alarm."""
    needed: dict[str, str] = {}
    for steps in plan.steps_by_key.values():
        for step in steps:
            vendor = vendor_of(step.kind)
            if vendor is not None and vendor.site_table is not None:
                needed.setdefault(vendor.site_table.name, step.kind)
    for name, kind in needed.items():
        if name not in table.raw:
            report.add(table.at(name), f'is required: plan "{plan.key}" has {kind} steps')


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
