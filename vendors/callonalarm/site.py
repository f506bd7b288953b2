"""CallOnAlarm's table in a site: the connection whose contacts are called for it."""

from dataclasses import dataclass
from typing import Final

from app.domain.site_tables import Report, Table
from vendors.base import SiteTable

KEYS: Final = ("account_number",)


@dataclass(frozen=True, slots=True)
class CallOnAlarmSite:
    """The CallOnAlarm connection whose contacts are called for this site."""

    account_number: str


def load(report: Report, site: Table) -> CallOnAlarmSite | None:
    """The site's ``[sites.<key>.callonalarm]`` table, or None (absent, or its problems reported)."""
    raw = site.table("callonalarm")
    if raw is None:
        return None
    table = Table(report, site.at("callonalarm"), raw, KEYS)
    account = table.text("account_number", required=True, example='a string like "CA-1001"', max_length=64)
    return None if account is None else CallOnAlarmSite(account_number=account)


TABLE: Final = SiteTable(name="callonalarm", type=CallOnAlarmSite, load=load)
