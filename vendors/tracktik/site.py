"""TrackTik's table in a site: the organization alarms are raised for and their type codes.

``[sites.<key>.tracktik]`` in the sites file; ``POST /alarms`` (seed 000) takes these fields.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from marshmallow import ValidationError

from app.domain.plan_keys import DEFAULT_KEY, PLAN_KEYS, TROUBLE_KEY, TROUBLE_KINDS
from app.domain.site_tables import Integer, Report, TableSchema, Text, Value, rule, show, unknown_plan_key
from vendors.base import SiteContext, SiteTable
from vendors.tracktik import steps


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


class _TypeCodes(Value[Mapping[str, str]]):
    """``alarm_type_codes``: a TrackTik alarm type code per plan key, in the file's order."""

    expected = (dict,)

    def convert(self, value: Mapping[str, object], data: Mapping[str, Any]) -> Mapping[str, str]:
        errors: dict[str | int, list[str]] = {}
        codes: dict[str, str] = {}
        for plan_key, code in value.items():
            if plan_key not in PLAN_KEYS:
                errors[plan_key] = [unknown_plan_key(plan_key)]
            elif not isinstance(code, str) or not code.strip():
                errors[plan_key] = [
                    f'must be a TrackTik alarm type code like "11111" (quote it), not {show(code)}'
                ]
            else:
                codes[plan_key] = code.strip()
        if not value:
            errors[""] = ['must name at least one code, e.g. default = "11111"']
        if errors:
            raise ValidationError(errors)
        return MappingProxyType(codes)


class TrackTikSiteSchema(TableSchema):
    """``[sites.<key>.tracktik]``."""

    alarm_organization = Integer(
        required=True,
        example="a TrackTik client id like 687",
        validate=rule(lambda v: v >= 1, lambda v: f"{v} is not a TrackTik client id (1 or more)"),
    )
    alarm_connection_custom_id = Text(example='a string like "ab-95367"')
    alarm_type_codes = _TypeCodes(required=True, example='a table like { burglary = "11111" }')

    def make(self, data: dict[str, Any]) -> TrackTikSite:
        return TrackTikSite(
            alarm_organization=data["alarm_organization"],
            alarm_type_codes=data["alarm_type_codes"],
            alarm_connection_custom_id=data.get("alarm_connection_custom_id"),
        )


def check(report: Report, context: SiteContext) -> None:
    """Every plan list that creates a TrackTik alarm needs a type code: its own or ``default``."""
    tracktik = context.table(TrackTikSite)
    if context.plan_key is None or tracktik is None:
        return
    codes = tracktik.alarm_type_codes
    if DEFAULT_KEY in codes:
        return
    uncovered = [
        plan_key
        for plan_key, kinds in context.plan_steps.items()
        if plan_key not in codes and steps.CREATE_ALARM in kinds
    ]
    where = f"{context.where}.tracktik.alarm_type_codes"
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


TABLE: Final = SiteTable(name="tracktik", type=TrackTikSite, schema=TrackTikSiteSchema, check=check)
