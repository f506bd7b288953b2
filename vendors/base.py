"""The parts every vendor declaration is made of, so that generic code can loop over vendors.

A vendor (an upstream the bridge drives: Alta, TrackTik, CallOnAlarm, RapidSOS, the CAD) declares in
its own package which steps it runs and which of them a site plan may name, which ``alarm.refs`` keys
it writes, the table it reads from a site in the sites file, how it is stood down, and what the
dashboard calls its ids. Intake, plans, the sites file, stand-down, operations, ``perform`` and the
dashboard ask the registry (``vendors``) for these instead of naming a vendor. Its settings (URL,
credentials, the waits of its steps) are declared in its ``settings`` module, read at start-up.

These declarations are data and small pure functions: no HTTP, no Celery, no Flask (an import
contract checks it). The client and tasks that act on them sit beside them, in ``client`` and ``tasks``
of the same package, which only workers load.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, TypeVar

from app.domain.site_tables import Location, Report, TableSchema
from config.settings import Settings, VendorSettings

T = TypeVar("T")


class HasTables(Protocol):
    """Something holding a site's vendor tables (a ``Site``, or a site being read)."""

    def table(self, kind: type[T]) -> T | None:
        """The vendor table of type ``kind``, or None when the site has none."""


@dataclass(frozen=True, slots=True)
class SiteContext:
    """What a vendor table's cross-checks see of the rest of its site, as read from the file.

    ``plan_key`` is None when the site's plan did not load (its problems are reported under
    ``[plans]``); ``plan_steps`` then is empty. ``location`` holds only the values that are right: a
    wrong one is reported and left out, so a check judges presence from ``raw``.
    """

    where: str  # "sites.<key>"
    raw: Mapping[str, object]  # the site's table as the file has it
    plan_key: str | None
    plan_steps: Mapping[str, tuple[str, ...]]  # the plan's step kinds, by plan key
    location: Location | None
    site_type: str | None
    tables: Mapping[type[object], object]  # the vendor tables that loaded, by type

    def table(self, kind: type[T]) -> T | None:
        """The vendor table of type ``kind`` when it loaded, else None."""
        found = self.tables.get(kind)
        return found if isinstance(found, kind) else None


@dataclass(frozen=True, slots=True)
class SiteTable:
    """A vendor's table in each site of the sites file (``[sites.<key>.<name>]``).

    ``schema`` reads it (its ``make`` builds a ``type``); ``check`` runs once the whole site is read,
    for what the table needs of the plan or the location; it reports and returns nothing.
    """

    name: str
    schema: type[TableSchema]
    type: type[object]
    check: Callable[[Report, SiteContext], None] | None = None


@dataclass(frozen=True, slots=True)
class ByApi:
    """A responder the bridge stands down itself: the ref that says it was engaged, and the step.

    ``maybe_engaged_by``: the create whose call may be engaged before its ref is recorded (the step
    then runs without the ref when that create tried). ``takes_cancel_code``: the step is told the
    panel's cancel code, so it waits for a create still in flight.
    """

    ref: str
    step: str
    maybe_engaged_by: str | None = None
    takes_cancel_code: bool = False


@dataclass(frozen=True, slots=True)
class ByHand:
    """A responder only a person can stand down: the ref, how people name it, and its create step.

    While ``create`` is in flight (or lost its answer) the responder may be engaged although no ref
    says so yet.
    """

    ref: str
    vendor: str
    what: str  # "dispatch" -> "TrackTik dispatch 42 is active"
    create: str


@dataclass(frozen=True, slots=True)
class PhoneFallback:
    """Calling a person by phone when a dispatch step cannot do its job: the step, and whom it calls."""

    step: str
    account: Callable[[HasTables], str | None]  # the site's own connection, if it has one
    # the monitoring centre's own connection, for a site without one (None: the alarm goes to a person)
    default_account: Callable[[Settings], str | None] = lambda _settings: None


@dataclass(frozen=True, slots=True)
class OperatorSteps:
    """Where an operator's verdict and End go for alarms that came from this vendor's source.

    ``applies(code, refs)``: whether an alarm (its SIA code, None for a webhook, and its refs) is
    this vendor's to be told.
    """

    applies: Callable[[str | None, Mapping[str, object]], bool]
    verify: str
    end: str


@dataclass(frozen=True, slots=True)
class Vendor:
    """One upstream's rules as the domain sees them; ``vendors.VENDORS`` holds one per vendor."""

    key: str  # the prefix of its task names and of its refs
    name: str  # as people read it: "TrackTik"
    steps: frozenset[str]  # every task name it runs
    plan_steps: tuple[str, ...]  # the steps a site plan may name
    refs: frozenset[str]  # every alarm.refs key it writes
    upstream_ids: tuple[tuple[str, str], ...] = ()  # (ref, label): its ids, as the dashboard names them
    video_links: str | None = None  # the ref holding links to recordings
    waking_refs: frozenset[str] = frozenset()  # refs whose arrival starts steps waiting for them
    site_table: SiteTable | None = None
    stand_down: ByApi | ByHand | None = None
    # steps that still run after the alarm has ended: they close it with the upstream (or look up
    # what closing needs)
    closing_steps: frozenset[str] = frozenset()
    falls_back: frozenset[str] = frozenset()  # steps whose permanent failure calls a person by phone
    phone_fallback: PhoneFallback | None = None
    source_kind: str | None = None  # its steps act on the alert a signal of this source kind came with
    prerequisites: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    emergency_request: str | None = None  # the 911 request other immediate life-safety steps wait for
    operator: OperatorSteps | None = None
    # its own settings (``<key>/settings.py``), read at start-up by every process that runs vendors
    settings: type[VendorSettings] | None = None
    # The steps that reach a responder (a guard, a 911 dispatch, people called) -> what their
    # ``action.result`` holds when a success reached nobody after all (``{"status": {...}}``): an
    # operator's End without an outcome records ``dispatched`` only after one of them.
    dispatches: Mapping[str, Mapping[str, frozenset[object]]] = field(
        default_factory=lambda: MappingProxyType({})
    )
