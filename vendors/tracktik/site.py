"""TrackTik's table in a site: the organization alarms are raised for and their type codes.

``[sites.<key>.tracktik]`` in the sites file; ``POST /alarms`` (seed 000) takes these fields.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from app.domain import task_names
from app.domain.plan_keys import DEFAULT_KEY, PLAN_KEYS, TROUBLE_KEY, TROUBLE_KINDS
from app.domain.site_tables import Report, Table, show, unknown_key
from vendors.base import SiteContext, SiteTable

KEYS: Final = ("alarm_organization", "alarm_connection_custom_id", "alarm_type_codes")


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


def load(report: Report, site: Table) -> TrackTikSite | None:
    """The site's ``[sites.<key>.tracktik]`` table, or None (absent, or its problems reported)."""
    raw = site.table("tracktik")
    if raw is None:
        return None
    errors_before = len(report.lines)
    table = Table(report, site.at("tracktik"), raw, KEYS)
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
                where, unknown_key(plan_key, sorted(PLAN_KEYS)) + ' (a family, "trouble" or "default")'
            )
        elif not isinstance(code, str) or not code.strip():
            report.add(where, f'must be a TrackTik alarm type code like "11111" (quote it), not {show(code)}')
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


def check(report: Report, context: SiteContext) -> None:
    """Every plan list that creates a TrackTik alarm needs a type code: its own or ``default``."""
    tracktik = context.table(TrackTikSite)
    if context.plan_key is None or tracktik is None:
        return
    table = context.site
    codes = tracktik.alarm_type_codes
    if DEFAULT_KEY in codes:
        return
    uncovered = [
        plan_key
        for plan_key, kinds in context.plan_steps.items()
        if plan_key not in codes and task_names.TRACKTIK_CREATE_ALARM in kinds
    ]
    where = f"{table.at('tracktik')}.alarm_type_codes"
    if DEFAULT_KEY in uncovered:
        # Only a default code can serve families the plan does not name.
        report.add(
            where, f'needs a "default" code: plan "{context.plan_key}" creates TrackTik alarms by default'
        )
    elif uncovered:
        report.add(
            where,
            f'has no code for {", ".join(uncovered)} and no "default", but plan "{context.plan_key}" creates '
            "TrackTik alarms for them",
        )


TABLE: Final = SiteTable(name="tracktik", type=TrackTikSite, load=load, check=check)
