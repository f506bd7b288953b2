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
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Literal, Protocol, TypeVar
from zoneinfo import ZoneInfo

from app.domain.plans import Plan
from app.domain.site_tables import Location as Location
from app.domain.site_tables import normalise as _normalise

T = TypeVar("T")

SourceKind = Literal["panel", "alta", "dc09"]
SOURCE_KINDS: tuple[SourceKind, ...] = ("panel", "alta", "dc09")
# Sources that post for panel accounts: over HTTP (panel) or as SIA DC-09 frames to the receiver.
ACCOUNT_SOURCE_KINDS: tuple[SourceKind, ...] = ("panel", "dc09")

# A dc09 source's timestamp band: how far a frame's timestamp may be behind and ahead of the
# receiver's clock. The default is the standard's (and pysiaalarm's): 40 s behind, 20 s ahead. A
# frame outside is refused (NAK), which is what makes a captured encrypted frame useless to replay.
DEFAULT_TIMESTAMP_PAST = timedelta(seconds=40)
DEFAULT_TIMESTAMP_FUTURE = timedelta(seconds=20)
MAX_TIMESTAMP_BAND = timedelta(hours=24)
# AES-128, -192 and -256, the key sizes DC-09 allows.
DC09_KEY_BYTES = (16, 24, 32)

# RapidSOS `variables.event.site_type` (seed 004). Residential and commercial sites are expected at a
# fixed civic address; personal and vehicle ones at GPS coordinates (vendors/rapidsos/site.py).
SITE_TYPES: frozenset[str] = frozenset({"RESIDENTIAL", "COMMERCIAL", "VEHICLE", "PERSONAL"})

# Used when a site does not say. Central stations commonly cancel a burglary that a user cancels within
# two minutes (CONTRACTS.md Part B §6.4).
DEFAULT_CANCEL_WINDOW = timedelta(minutes=2)
MAX_CANCEL_WINDOW = timedelta(hours=24)

# Supervision (issue 18): how often an account must be heard from. Below the minimum the tick (every
# WATCHDOG_INTERVAL_S) could not tell late from on time; above the maximum it is a typo. A missing
# grace is a trap (a test a few seconds late every day would page a person), so it has a default.
MIN_LINK_SUPERVISION = timedelta(seconds=10)
MAX_LINK_SUPERVISION = timedelta(days=7)
MIN_TEST_INTERVAL = timedelta(minutes=1)
MAX_TEST_INTERVAL = timedelta(days=35)
MAX_TEST_GRACE = timedelta(hours=24)
DEFAULT_TEST_GRACE = timedelta(minutes=15)

# A shorter bearer token can be guessed; the check costs integrators nothing (`openssl rand -hex 32`).
MIN_TOKEN_LENGTH = 16
# Standard Webhooks recommends secrets of 24 to 64 random bytes, written "whsec_" + base64.
SIGNING_SECRET_PREFIX = "whsec_"  # noqa: S105 (a format prefix, not a secret)
SIGNING_SECRET_BYTES = range(24, 65)


class SitesFileError(ValueError):
    """The sites file cannot be used. ``str()`` is one line per problem; ``errors`` holds them."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors: tuple[str, ...] = tuple(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True, slots=True)
class Supervision:
    """How often an account must be heard from; a missed deadline is a trouble for a person.

    ``link``: any contact (an event, or a DC-09 link frame such as ``NULL``) within this period.
    ``test_interval``: an automatic test (SIA ``RP``, or ``RY`` sent with a trouble present) within
    this period plus ``test_grace``.
    None switches that check off.
    """

    link: timedelta | None = None
    test_interval: timedelta | None = None
    test_grace: timedelta = DEFAULT_TEST_GRACE

    @property
    def test_period(self) -> timedelta | None:
        """How long after the last test (or the start of supervision) a missing one is a trouble."""
        return None if self.test_interval is None else self.test_interval + self.test_grace

    def over(self, base: "Supervision | None") -> "Supervision":
        """This (a site's) supervision, taking each check it does not declare from ``base`` (its source's)."""
        if base is None:
            return self
        link = self.link if self.link is not None else base.link
        if self.test_interval is not None:
            return Supervision(link, self.test_interval, self.test_grace)
        return Supervision(link, base.test_interval, base.test_grace)


@dataclass(frozen=True, slots=True)
class Source:
    """A sender allowed to post signals, and the credentials that prove it is that sender.

    ``tokens`` are bearer tokens (several during a rotation); ``signing_secrets`` are Standard
    Webhooks secrets (``whsec_…``), several during a rotation too. At least one of the two is set,
    except on a ``dc09`` source: DC-09 frames carry no credential, so the receiver knows the source by
    the account, and an account with an AES key in ``encryption_keys`` must encrypt its frames.
    """

    key: str
    kind: SourceKind
    tokens: tuple[str, ...] = field(default=(), repr=False)
    signing_secrets: tuple[str, ...] = field(default=(), repr=False)
    supervision: Supervision | None = None  # every account routed through it, unless its site says
    # kind "dc09" only: AES keys by account (normalised), and the band a frame's timestamp must fall in.
    encryption_keys: Mapping[str, bytes] = field(default_factory=dict, repr=False, hash=False, compare=False)
    timestamp_past: timedelta = DEFAULT_TIMESTAMP_PAST
    timestamp_future: timedelta = DEFAULT_TIMESTAMP_FUTURE

    def encryption_key(self, account: str) -> bytes | None:
        """The AES key of a dc09 ``account``, or None when its frames come in clear."""
        return self.encryption_keys.get(_normalise(account))

    @property
    def signing_keys(self) -> tuple[bytes, ...]:
        """The raw HMAC-SHA256 keys behind ``signing_secrets`` (base64 after the ``whsec_`` prefix)."""
        return tuple(base64.b64decode(s.removeprefix(SIGNING_SECRET_PREFIX)) for s in self.signing_secrets)


@dataclass(frozen=True, slots=True)
class SupervisedAccount:
    """One account whose link is supervised: for which site, how often, and through which sources.

    An account is supervised once for its site, whichever of the site's sources brings its signals
    (a dual-path panel: a DC-09 link beside a gateway posting over HTTP): a contact through any of
    them counts. ``source_key`` is the one its ledger row is kept under (the first of the site's
    sources that routes the account) and ``paths`` all of them, in the site's order.
    """

    source_key: str
    account: str  # as the sites file writes it
    site_key: str
    supervision: Supervision
    # As Sites.supervision_for answers it: the path asked about is a dc09 source, so every event
    # through it came in a DC-09 frame (a link frame too).
    dc09: bool = False
    paths: tuple[str, ...] = field(default=(), repr=False)


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
    supervision: Supervision | None = None  # overrides, check by check, its sources' supervision
    # The vendor tables the site has (``vendors.SITE_TABLES``), by type: read with ``table``.
    tables: Mapping[type[object], object] = field(default_factory=dict, hash=False)

    def table(self, kind: type[T]) -> T | None:
        """The site's vendor table of type ``kind`` (a class from ``vendors/<key>/site.py``), or None."""
        found = self.tables.get(kind)
        return found if isinstance(found, kind) else None

    def without(self, kind: type[object]) -> "Site":
        """This site without its vendor table of type ``kind``."""
        return replace(self, tables={k: v for k, v in self.tables.items() if k is not kind})


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
        "_dc09_accounts",
        "_sites",
        "_sources",
        "_spellings",
        "_supervised",
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
        dc09_routes, dc09_claims = _route_index(self._sources, self._sites.values(), "accounts", "dc09")
        self._account_routes.update(dc09_routes)  # keyed by source too: no entry replaces another
        account_claims += dc09_claims
        self._dc09_accounts, dc09_problems = _dc09_index(dc09_routes, self._sources)
        problems.extend(dc09_problems)
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
        self._spellings: dict[tuple[str, bool, str], str] = {}
        for site in self._sites.values():
            for alta, identifiers in ((False, site.accounts), (True, site.alta_zones)):
                for identifier in identifiers:
                    self._spellings.setdefault((site.key, alta, _normalise(identifier)), identifier)
            for account in {_normalise(a) for a in site.accounts}:
                self._by_account[account] = (*self._by_account.get(account, ()), site)
            for zone in {_normalise(z) for z in site.alta_zones}:
                self._by_zone[zone] = (*self._by_zone.get(zone, ()), site)
        self._supervised = _supervised_accounts(self._account_routes, self._sources)

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

    def as_listed(self, site: Site, identifier: str, *, alta: bool = False) -> str:
        """``identifier`` (an account, or an Alta zone with ``alta``) as ``site`` lists it.

        Routing ignores case and surrounding spaces; an alarm records its account as listed, so that
        grouping, restores and cancels find it however each signal spells it.
        """
        return self._spellings.get((site.key, alta, _normalise(identifier)), identifier)

    def sites_for_account(self, account: str) -> tuple[Site, ...]:
        """Every site that lists ``account``, whatever its sources.

        Tells the web layer a 403 (the account is some site's, not through this source) from an
        unrouted signal (nobody's account: recorded with ``UNROUTED_PLAN`` for a person).
        """
        return self._by_account.get(_normalise(account), ())

    def dc09_route(self, account: str) -> tuple[Source, Site] | None:
        """The dc09 source and the site that claim a DC-09 frame's ``account``, or None (NAK it).

        The receiver has one port for every dc09 source, so an account belongs to one of them only
        (checked at load); a frame for an account only a panel source lists is not that account's.
        """
        return self._dc09_accounts.get(_normalise(account))

    def sites_for_alta_zone(self, zone_id: str) -> tuple[Site, ...]:
        """Every site that lists Alta zone ``zone_id``, whatever its sources (see sites_for_account)."""
        return self._by_zone.get(_normalise(zone_id), ())

    def supervision_for(self, source_key: str, account: str) -> SupervisedAccount | None:
        """The supervision of ``account`` reached through ``source_key``, or None (the common, free case).

        Every source of a site that routes the account answers the same supervision and the same
        ledger row (``SupervisedAccount.source_key``); only ``dc09`` tells this path's kind. Intake
        asks this for every event, so an unsupervised account costs a dictionary lookup and no
        database round trip.
        """
        if not self._supervised:
            return None
        return self._supervised.get((source_key, _normalise(account)))

    @property
    def supervised_accounts(self) -> tuple[SupervisedAccount, ...]:
        """Every account whose link is supervised, once per site and account, in file order."""
        return tuple(s for (source_key, _), s in self._supervised.items() if source_key == s.source_key)


def _dc09_index(
    routes: Mapping[tuple[str, str], Site], sources: Mapping[str, Source]
) -> tuple[dict[str, tuple[Source, Site]], list[str]]:
    """Each DC-09 account's one (source, site), the accounts two dc09 sources claim, and the keys two
    accounts share (the header's account is in clear: a frame of one could pass as the other's)."""
    index: dict[str, tuple[Source, Site]] = {}
    problems: list[str] = []
    for (source_key, account), site in routes.items():
        other = index.setdefault(account, (sources[source_key], site))
        if other[0].key != source_key:
            problems.append(
                f"account {account!r} is claimed through dc09 sources {other[0].key!r} and {source_key!r}"
            )
    key_owner: dict[bytes, str] = {}
    for source in sources.values():
        for account, key in source.encryption_keys.items():
            owner = key_owner.setdefault(key, account)
            if owner != account:
                problems.append(f"dc09 accounts {owner!r} and {account!r} share a key")
    return index, problems


def _supervised_accounts(
    routes: Mapping[tuple[str, str], Site], sources: Mapping[str, Source]
) -> dict[tuple[str, str], SupervisedAccount]:
    """Each routed (source, account)'s supervision: one per site and account, whatever the path.

    The site's values win check by check over its sources'; where several of the account's sources
    declare a check, the shortest period applies (any path counts as contact, so the account is
    held to the strictest promise made for it).
    """
    paths: dict[tuple[str, str], list[str]] = {}
    for (source_key, normalised), site in routes.items():
        paths.setdefault((site.key, normalised), []).append(source_key)
    found: dict[tuple[str, str], SupervisedAccount] = {}
    for (source_key, normalised), site in routes.items():
        routed_by = tuple(s for s in site.sources if s in paths[(site.key, normalised)])
        base = _strictest([sources[s].supervision for s in routed_by])
        supervision = site.supervision.over(base) if site.supervision is not None else base
        if supervision is None or (supervision.link is None and supervision.test_interval is None):
            continue
        account = next(a.strip() for a in site.accounts if _normalise(a) == normalised)
        found[(source_key, normalised)] = SupervisedAccount(
            routed_by[0],
            account,
            site.key,
            supervision,
            dc09=sources[source_key].kind == "dc09",
            paths=routed_by,
        )
    return found


def _strictest(declared: Iterable[Supervision | None]) -> Supervision | None:
    """One supervision from several sources': the shortest link, the test with the shortest period."""
    found = [s for s in declared if s is not None]
    if len(found) <= 1:
        return found[0] if found else None
    links = [s.link for s in found if s.link is not None]
    tests = [s for s in found if s.test_period is not None]
    test = min(tests, key=lambda s: s.test_period or timedelta(0), default=None)
    if test is None:
        return Supervision(min(links, default=None))
    return Supervision(min(links, default=None), test.test_interval, test.test_grace)


# --------------------------------------------------------------------------------------------------
# Loading and validating the file
