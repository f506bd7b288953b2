"""Sites and sources: who may post, which site a signal belongs to, and what each site's plan is.

The model and the routing directory; ``app.domain.sites_file`` reads and validates the file.

An integrator describes the installation in one TOML file (``SITES_FILE``; a commented example is
``config/examples/sites.toml``). It is read once at start-up and validated as a whole: every problem
is reported on one line naming the file, the table and the key, and all of them are reported
together, because an integrator fixing a file one error per restart loses an afternoon. A file that
loads is safe to run: every source can authenticate, every site can be routed to, every plan step
has the vendor settings it needs, and no life-safety alarm can be held for a cancel window.

Secrets never live in the file. A source names the environment variables that hold its bearer
tokens and its Standard Webhooks signing secrets; ``load_sites`` is handed the environment, because
only ``config/settings.py`` reads ``os.environ``. Secret values are kept out of ``repr()`` and out of
every error message.

Routing is per source: a site is found from a panel account or an Alta zone only through a source
the site lists, so one customer's credentials cannot raise alarms at another customer's site.
Identifiers are matched without regard to case or surrounding spaces (panels differ in how they
print hex account numbers).
"""

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Literal, Protocol, TypeVar
from zoneinfo import ZoneInfo

from app.domain.plans import (
    DEFAULT_KEY,
    TROUBLE_KEY,
    TROUBLE_KINDS,
    Plan,
)

SourceKind = Literal["panel", "alta"]
SOURCE_KINDS: tuple[SourceKind, ...] = ("panel", "alta")

# RapidSOS `variables.event.site_type` (seed 004). Residential and commercial sites are expected at a
# fixed civic address; personal and vehicle ones at GPS coordinates.
SITE_TYPES: frozenset[str] = frozenset({"RESIDENTIAL", "COMMERCIAL", "VEHICLE", "PERSONAL"})
GEODETIC_SITE_TYPES: frozenset[str] = frozenset({"VEHICLE", "PERSONAL"})

# Used when a site does not say. Central stations commonly cancel a burglary that a user cancels within
# two minutes (CONTRACTS.md Part B §6.4).
DEFAULT_CANCEL_WINDOW = timedelta(minutes=2)
MAX_CANCEL_WINDOW = timedelta(hours=24)

# RapidSOS recommends at most three emergency contacts besides the primary keyholder (seed 004).
MAX_EMERGENCY_CONTACTS = 4

# A shorter bearer token can be guessed; the check costs integrators nothing (`openssl rand -hex 32`).
MIN_TOKEN_LENGTH = 16
# Standard Webhooks recommends secrets of 24 to 64 random bytes, written "whsec_" + base64.
SIGNING_SECRET_PREFIX = "whsec_"  # noqa: S105 (a format prefix, not a secret)
SIGNING_SECRET_BYTES = range(24, 65)

# Which vendor table a step kind needs on the site that runs it (cad.* and alta.* need none: the CAD
# is configured once in the settings, and Alta acts on the alert the signal came with).
STEP_VENDOR_TABLES: Mapping[str, str] = MappingProxyType(
    {"tracktik": "tracktik", "callonalarm": "callonalarm", "rapidsos": "rapidsos"}
)


class SitesFileError(ValueError):
    """The sites file cannot be used. ``str()`` is one line per problem; ``errors`` holds them."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True, slots=True)
class Source:
    """A sender allowed to post signals, and the credentials that prove it is that sender.

    ``tokens`` are bearer tokens (several during a rotation); ``signing_secrets`` are Standard
    Webhooks secrets (``whsec_…``), several during a rotation too. At least one of the two is set.
    """

    key: str
    kind: SourceKind
    tokens: tuple[str, ...] = field(default=(), repr=False)
    signing_secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def signing_keys(self) -> tuple[bytes, ...]:
        """The raw HMAC-SHA256 keys behind ``signing_secrets`` (base64 after the ``whsec_`` prefix)."""
        return tuple(base64.b64decode(s.removeprefix(SIGNING_SECRET_PREFIX)) for s in self.signing_secrets)


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


@dataclass(frozen=True, slots=True)
class TrackTikSite:
    """How a site's alarms are raised in TrackTik (``POST /alarms``, seed 000).

    ``alarm_type_codes`` maps plan keys (a family, ``trouble``, ``default``) to TrackTik alarm type
    codes configured for ``alarm_organization``.
    """

    alarm_organization: int
    alarm_type_codes: Mapping[str, str] = field(hash=False)
    alarm_connection_custom_id: str | None = None

    def alarm_type_code(self, family: str, kind: str) -> str | None:
        """The type code for an event: troubles use ``trouble``, alarms their family; then ``default``."""
        key = TROUBLE_KEY if kind in TROUBLE_KINDS else family
        return self.alarm_type_codes.get(key, self.alarm_type_codes.get(DEFAULT_KEY))


@dataclass(frozen=True, slots=True)
class CallOnAlarmSite:
    """The CallOnAlarm connection whose contacts are called for this site."""

    account_number: str


@dataclass(frozen=True, slots=True)
class EmergencyContact:
    """A RapidSOS emergency contact; the first one is taken as the keyholder."""

    name: str
    phone: str  # E.164, with or without the leading "+"
    relationship: str | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class RapidSOSSite:
    """What RapidSOS needs besides the location and the site type (``POST /v1/alerts/``, seed 004)."""

    callflow: str
    emergency_contacts: tuple[EmergencyContact, ...] = ()
    alarm_permit_number: str | None = None
    site_phone: str | None = None


@dataclass(frozen=True, slots=True)
class Site:
    """One protected place: how signals reach it, where it is, and what to do when it alarms."""

    key: str
    name: str
    sources: tuple[str, ...]
    accounts: tuple[str, ...]
    alta_zones: tuple[str, ...]
    timezone: ZoneInfo
    site_type: str
    instructions: str
    cancel_window: timedelta
    plan: Plan
    location: Location
    tracktik: TrackTikSite | None = None
    callonalarm: CallOnAlarmSite | None = None
    rapidsos: RapidSOSSite | None = None


def _normalise(identifier: str) -> str:
    return identifier.strip().casefold()


def _token_digest(token: str) -> bytes:
    # Tokens are compared as SHA-256 digests, so every comparison is over 32 bytes and the time taken
    # says nothing about the length of the configured tokens.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class _Claim:
    """An identifier two sites claim on the same source."""

    site: str
    field: str
    identifier: str
    source: str
    other_site: str


class _Routable(Protocol):
    """What routing needs of a site: a ``Site``, or the loader's record of a site that failed."""

    @property
    def key(self) -> str: ...
    @property
    def sources(self) -> tuple[str, ...]: ...
    @property
    def accounts(self) -> tuple[str, ...]: ...
    @property
    def alta_zones(self) -> tuple[str, ...]: ...


_R = TypeVar("_R", bound=_Routable)


def _route_index(
    sources: Mapping[str, Source], sites: Iterable[_R], attribute: str, kind: SourceKind
) -> tuple[dict[tuple[str, str], _R], list[_Claim]]:
    """Map (source key, identifier) to the site that claims it, and list identifiers claimed twice."""
    index: dict[tuple[str, str], _R] = {}
    claims: list[_Claim] = []
    for site in sites:
        for source_key in site.sources:
            source = sources.get(source_key)
            if source is None or source.kind != kind:
                continue
            for identifier in getattr(site, attribute):
                route = (source_key, _normalise(identifier))
                other = index.get(route)
                if other is not None and other.key != site.key:
                    claims.append(_Claim(site.key, attribute, identifier, source_key, other.key))
                else:
                    index[route] = site
    return index, claims


class Sites:
    """The whole directory: sources, sites and their plans, with O(1) lookups for intake."""

    __slots__ = (
        "_account_routes",
        "_by_account",
        "_by_zone",
        "_sites",
        "_sources",
        "_tokens",
        "_zone_routes",
    )

    def __init__(self, sources: Iterable[Source] = (), sites: Iterable[Site] = ()) -> None:
        """Index ``sources`` and ``sites``; ``ValueError`` if they contradict each other.

        ``load_sites`` reports the same problems with file, table and key; this check keeps a
        directory built in code (tests, tools) just as consistent.
        """
        self._sources: dict[str, Source] = {}
        self._sites: dict[str, Site] = {}
        problems: list[str] = []
        for source in sources:
            if source.key in self._sources:
                problems.append(f"source {source.key!r} is defined twice")
            self._sources[source.key] = source
        for site in sites:
            if site.key in self._sites:
                problems.append(f"site {site.key!r} is defined twice")
            self._sites[site.key] = site
            problems.extend(
                f"site {site.key!r} names unknown source {s!r}"
                for s in site.sources
                if s not in self._sources
            )
        self._account_routes, account_claims = _route_index(
            self._sources, self._sites.values(), "accounts", "panel"
        )
        self._zone_routes, zone_claims = _route_index(
            self._sources, self._sites.values(), "alta_zones", "alta"
        )
        problems.extend(
            f"{c.field} {c.identifier!r} of site {c.site!r} is already site {c.other_site!r}'s "
            f"on source {c.source!r}"
            for c in account_claims + zone_claims
        )
        token_owner: dict[bytes, str] = {}
        for source in self._sources.values():
            for token in set(source.tokens):
                owner = token_owner.setdefault(_token_digest(token), source.key)
                if owner != source.key:
                    problems.append(f"sources {owner!r} and {source.key!r} share a token")
        if problems:
            raise ValueError("; ".join(problems))
        self._tokens: tuple[tuple[bytes, Source], ...] = tuple(
            (digest, self._sources[key]) for digest, key in token_owner.items()
        )
        self._by_account: dict[str, tuple[Site, ...]] = {}
        self._by_zone: dict[str, tuple[Site, ...]] = {}
        for site in self._sites.values():
            for account in {_normalise(a) for a in site.accounts}:
                self._by_account[account] = (*self._by_account.get(account, ()), site)
            for zone in {_normalise(z) for z in site.alta_zones}:
                self._by_zone[zone] = (*self._by_zone.get(zone, ()), site)

    def __repr__(self) -> str:
        return f"Sites({len(self._sources)} sources, {len(self._sites)} sites)"

    @property
    def sources(self) -> tuple[Source, ...]:
        """Every source, in file order."""
        return tuple(self._sources.values())

    @property
    def sites(self) -> tuple[Site, ...]:
        """Every site, in file order."""
        return tuple(self._sites.values())

    def source(self, key: str) -> Source | None:
        """The source called ``key``, if there is one."""
        return self._sources.get(key)

    def site(self, key: str) -> Site | None:
        """The site called ``key``, if there is one."""
        return self._sites.get(key)

    def source_for_token(self, token: str) -> Source | None:
        """The source whose bearer token ``token`` is, or None (the caller answers 401).

        Compares in constant time against every configured token, without stopping at a match, so
        the time taken does not tell a caller which source (if any) a guess came close to. Each token
        belongs to one source only (checked at load), so there is at most one answer.
        """
        presented = _token_digest(token)
        found: Source | None = None
        for digest, source in self._tokens:
            if hmac.compare_digest(presented, digest):
                found = source
        return found

    def site_for_account(self, source_key: str, account: str) -> Site | None:
        """The site that ``source_key`` may post panel ``account`` for, or None."""
        return self._account_routes.get((source_key, _normalise(account)))

    def site_for_alta_zone(self, source_key: str, zone_id: str) -> Site | None:
        """The site that ``source_key`` may post Alta alarm zone ``zone_id`` for, or None."""
        return self._zone_routes.get((source_key, _normalise(zone_id)))

    def sites_for_account(self, account: str) -> tuple[Site, ...]:
        """Every site that lists ``account``, whatever its sources.

        Tells the web layer a 403 (the account is some site's, not through this source) from an
        unrouted signal (nobody's account: recorded with ``UNROUTED_PLAN`` for a person).
        """
        return self._by_account.get(_normalise(account), ())

    def sites_for_alta_zone(self, zone_id: str) -> tuple[Site, ...]:
        """Every site that lists Alta zone ``zone_id``, whatever its sources (see sites_for_account)."""
        return self._by_zone.get(_normalise(zone_id), ())


# --------------------------------------------------------------------------------------------------
# Loading and validating the file
