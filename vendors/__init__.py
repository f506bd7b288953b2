"""The vendor registry: one declaration per upstream, and the lookups generic code loops over.

Intake, plans, the sites file, stand-down, operations, ``workers.perform`` and the dashboard ask
these instead of naming a vendor, so a vendor's rules live in its own package (``vendors/<key>/``)
and a sixth vendor is one more package plus one line in ``VENDORS``. The order of ``VENDORS`` is
the order people see: site tables in the sites file and ``sites check``, ids on the dashboard.

A vendor's package also holds its worker side, which only the worker loads (an import contract
keeps the web, the receiver and the configuration from it): ``client`` (the upstream client; its
class is named ``CLIENT``) and ``tasks`` (its Celery tasks, named by its ``steps`` module). Neither
is imported here nor by the declarations: the worker finds them by these module names.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from config.settings import VendorSettings
from vendors import alta, cad, callonalarm, rapidsos, tracktik
from vendors.base import ByApi, ByHand, OperatorSteps, PhoneFallback, SiteTable, Vendor

VENDORS: Final[tuple[Vendor, ...]] = (
    alta.VENDOR,
    tracktik.VENDOR,
    callonalarm.VENDOR,
    rapidsos.VENDOR,
    cad.VENDOR,
)


def _by_step(vendors: tuple[Vendor, ...]) -> Mapping[str, Vendor]:
    """Each task name's vendor; a step or a ref two vendors declare is a mistake caught at import."""
    found: dict[str, Vendor] = {}
    refs: dict[str, str] = {}
    for vendor in vendors:
        for step in vendor.steps:
            if found.setdefault(step, vendor) is not vendor:
                raise ValueError(f"step {step!r} is declared by {found[step].key} and {vendor.key}")
        if not vendor.dispatches.keys() <= vendor.steps:
            raise ValueError(f"{vendor.key} declares a dispatch it does not run: {sorted(vendor.dispatches)}")
        for ref in vendor.refs:
            if refs.setdefault(ref, vendor.key) != vendor.key:
                raise ValueError(f"ref {ref!r} is declared by {refs[ref]} and {vendor.key}")
    return MappingProxyType(found)


_BY_STEP: Final = _by_step(VENDORS)

# The steps a site's action plan may name (the sites file validates against this set). Verifying and
# ending are operators' decisions (the operator API plans them), not plan steps.
PLAN_STEP_KINDS: Final = frozenset(step for vendor in VENDORS for step in vendor.plan_steps)
# The vendor tables a site may have, in the order the sites file lists them.
SITE_TABLES: Final[tuple[SiteTable, ...]] = tuple(v.site_table for v in VENDORS if v.site_table)
# Standing responders down (app.domain.stand_down): by API, and by hand.
BY_API: Final[tuple[ByApi, ...]] = tuple(v.stand_down for v in VENDORS if isinstance(v.stand_down, ByApi))
BY_HAND: Final[tuple[ByHand, ...]] = tuple(v.stand_down for v in VENDORS if isinstance(v.stand_down, ByHand))
# The creates whose result a person must stand down by hand -> how people name that vendor.
BY_HAND_CREATES: Final[Mapping[str, str]] = MappingProxyType({h.create: h.vendor for h in BY_HAND})
# A permanent failure (or a "no PSAP can take it") of these steps calls a person by phone instead.
FALLBACK_FROM: Final = frozenset(step for vendor in VENDORS for step in vendor.falls_back)
# The steps that still run after the alarm has ended (app.domain.actions: every other step is cancelled).
CLOSING_STEPS: Final = frozenset(step for vendor in VENDORS for step in vendor.closing_steps)
# The refs a step may wait for (NotYetError(wake_on_refs=True)).
WAKING_REFS: Final = frozenset(ref for vendor in VENDORS for ref in vendor.waking_refs)
# The 911 requests that other immediate life-safety steps wait for.
EMERGENCY_REQUESTS: Final = frozenset(v.emergency_request for v in VENDORS if v.emergency_request)
# The refs that name the alarm upstream, in the order an operator looks for them -> their labels.
UPSTREAM_IDS: Final[Mapping[str, str]] = MappingProxyType(
    {ref: label for vendor in VENDORS for ref, label in vendor.upstream_ids}
)
VIDEO_LINK_REFS: Final = tuple(v.video_links for v in VENDORS if v.video_links)
OPERATOR_STEPS: Final[tuple[OperatorSteps, ...]] = tuple(v.operator for v in VENDORS if v.operator)
# The steps that reach a responder -> what their result holds when they reached nobody after all
# (app.domain.operations: an End without an outcome). Alta finds the alert and its video, and the
# CAD upload records the alarm in the dispatch centre's analytics: they declare none.
RESPONDER_STEPS: Final[Mapping[str, Mapping[str, frozenset[object]]]] = MappingProxyType(
    {step: nobody for vendor in VENDORS for step, nobody in vendor.dispatches.items()}
)
# Each vendor's settings class: every process that runs vendors reads them at start-up
# (``load_settings(vendors.SETTINGS)``), and the README's and .env.example's lists are generated from them.
SETTINGS: Final[tuple[type[VendorSettings], ...]] = tuple(v.settings for v in VENDORS if v.settings)

# Each vendor's worker side, by the convention above: the worker app includes the tasks modules
# (workers.celery_app), and builds one client per vendor from the client modules (workers.clients).
CLIENT_MODULES: Final = tuple(f"{__name__}.{v.key}.client" for v in VENDORS)
TASK_MODULES: Final = tuple(f"{__name__}.{v.key}.tasks" for v in VENDORS)
# Every task name a vendor runs (a unit test checks the worker app registers each of them).
STEPS: Final = frozenset(step for vendor in VENDORS for step in vendor.steps)


def _phone_fallback() -> PhoneFallback:
    found = [v.phone_fallback for v in VENDORS if v.phone_fallback]
    if len(found) != 1:
        raise ValueError(f"exactly one vendor calls people as the fallback, not {len(found)}")
    return found[0]


PHONE_FALLBACK: Final = _phone_fallback()


def sandbox_base_urls(sandbox: str) -> dict[str, str]:
    """Each vendor's ``<PREFIX>_BASE_URL`` pointed at a sandbox at ``sandbox``, which serves every
    simulated vendor under its key (``http://127.0.0.1:8100/tracktik``)."""
    return {v.settings.env_name("base_url"): f"{sandbox}/{v.key}" for v in VENDORS if v.settings}


def vendor_of(step: str) -> Vendor | None:
    """The vendor that runs task ``step``, or None (a system task, or no task at all)."""
    return _BY_STEP.get(step)


def acts_on_source(step: str) -> bool:
    """True for a step that acts on the alert its signal came with (it runs only for that source)."""
    vendor = _BY_STEP.get(step)
    return vendor is not None and vendor.source_kind is not None


__all__ = [
    "BY_API",
    "BY_HAND",
    "BY_HAND_CREATES",
    "CLIENT_MODULES",
    "CLOSING_STEPS",
    "EMERGENCY_REQUESTS",
    "FALLBACK_FROM",
    "OPERATOR_STEPS",
    "PHONE_FALLBACK",
    "PLAN_STEP_KINDS",
    "SETTINGS",
    "SITE_TABLES",
    "STEPS",
    "TASK_MODULES",
    "UPSTREAM_IDS",
    "VENDORS",
    "VIDEO_LINK_REFS",
    "WAKING_REFS",
    "Vendor",
    "acts_on_source",
    "sandbox_base_urls",
    "vendor_of",
]
